//! The retry cache: the answer of each successful mutation, by the request id the client
//! sent (client id, call id), so a retried call whose first answer was lost gets the same
//! answer instead of running again (an `UnlinkAt` retried after it succeeded must not
//! report `NotFound`).
//!
//! In memory and bounded (oldest answers evicted first); it does not survive a restart yet
//! (SPEC wants the result in the op-log record for failover).

use std::collections::{HashMap, VecDeque};

use parking_lot::Mutex;
use rdfs_proto::pb::RequestId;

/// Answers kept; a client retries within seconds, so a modest window suffices.
pub const RETRY_CACHE_ENTRIES: usize = 16 * 1024;
/// Longest client id accepted as a key (clients send 16 bytes).
const MAX_CLIENT_ID_BYTES: usize = 64;

type Key = (Vec<u8>, u64);

/// Encoded answers by request id, with insertion order for eviction.
#[derive(Default)]
pub struct RetryCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    answers: HashMap<Key, Vec<u8>>,
    order: VecDeque<Key>,
}

fn key(id: &Option<RequestId>) -> Option<Key> {
    let id = id.as_ref()?;
    if id.client_id.is_empty() || id.client_id.len() > MAX_CLIENT_ID_BYTES {
        return None;
    }
    Some((id.client_id.clone(), id.call_id))
}

impl RetryCache {
    /// The cached answer of `id`, decoded.
    pub fn get<R: prost::Message + Default>(&self, id: &Option<RequestId>) -> Option<R> {
        let k = key(id)?;
        let inner = self.inner.lock();
        let bytes = inner.answers.get(&k)?;
        R::decode(bytes.as_slice()).ok()
    }

    /// Remembers the answer of `id`.
    pub fn put<R: prost::Message>(&self, id: &Option<RequestId>, answer: &R) {
        let Some(k) = key(id) else {
            return;
        };
        let mut inner = self.inner.lock();
        if inner
            .answers
            .insert(k.clone(), answer.encode_to_vec())
            .is_none()
        {
            inner.order.push_back(k);
        }
        while inner.order.len() > RETRY_CACHE_ENTRIES {
            if let Some(old) = inner.order.pop_front() {
                inner.answers.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdfs_proto::pb::{FileAttr, LinkAtResponse};

    fn id(call: u64) -> Option<RequestId> {
        Some(RequestId {
            client_id: vec![7; 16],
            call_id: call,
        })
    }

    #[test]
    fn answers_come_back_by_request_id_and_the_oldest_go_first() {
        let cache = RetryCache::default();
        let answer = LinkAtResponse {
            attr: Some(FileAttr {
                inode: 9,
                nlink: 2,
                ..Default::default()
            }),
        };
        cache.put(&id(1), &answer);
        assert_eq!(cache.get::<LinkAtResponse>(&id(1)), Some(answer.clone()));
        assert_eq!(cache.get::<LinkAtResponse>(&id(2)), None);
        assert_eq!(cache.get::<LinkAtResponse>(&None), None);
        for call in 2..(RETRY_CACHE_ENTRIES as u64 + 2) {
            cache.put(&id(call), &answer);
        }
        assert_eq!(cache.get::<LinkAtResponse>(&id(1)), None, "evicted");
        assert_eq!(cache.get::<LinkAtResponse>(&id(2)), Some(answer));
    }
}
