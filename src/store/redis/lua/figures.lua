-- figures(now): waiting, active, pending, admissions per minute (-1: not known yet).
return figures(clock(ARGV[1]))
