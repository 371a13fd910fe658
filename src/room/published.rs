//! `GET /.usher/draw/{room}`: the room's draw as anyone may check it (DESIGN §3, see
//! [`crate::store::draw`]). The commitment while an event is announced, then the seed, the
//! pre-queued tickets and the admitter's walk through them.

use crate::store::draw::Publication;
use crate::store::{RoomStore, StoreError};
use bytes::Bytes;
use std::sync::Mutex;

/// `GET /.usher/draw/{room}`.
pub const PATH: &str = "/.usher/draw/";

/// A walk this large is read from the store at most once per [`CACHE_MS`]: a million places
/// are tens of megabytes, and anyone may ask. A smaller one is read each time, so a
/// commitment and its reveal are never seen late.
const CACHE_BYTES: usize = 256 * 1024;
const CACHE_MS: u64 = 2_000;

/// The last large publication and when it was read.
#[derive(Default)]
pub struct Published {
    cache: Mutex<Option<(u64, Bytes)>>,
}

impl Published {
    /// The publication as JSON.
    pub async fn json(&self, room: &str, store: &RoomStore, now_ms: u64) -> Result<Bytes, StoreError> {
        if let Some((at, body)) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            if now_ms < at + CACHE_MS {
                return Ok(body.clone());
            }
        }
        let (draw, walk) = store.draw(now_ms).await?;
        let mut json = serde_json::to_vec(&Publication::new(room, draw.as_ref(), walk)).unwrap_or_default();
        json.push(b'\n');
        let body = Bytes::from(json);
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) =
            (body.len() >= CACHE_BYTES).then(|| (now_ms, body.clone()));
        Ok(body)
    }
}
