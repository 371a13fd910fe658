-- end_session(session_id): 1 if it was live.
return end_session(ARGV[1])
