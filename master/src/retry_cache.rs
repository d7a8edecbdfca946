//! The retry cache: the answer of each successful mutation, by the request id the client
//! sent (client id, call id), so a retried call whose first answer was lost gets the same
//! answer instead of running again (an `UnlinkAt` retried after it succeeded must not
//! report `NotFound`).
//!
//! Each answer is also in the op log (`Op::RequestDone`, written in the same batch as the
//! mutation), so the cache is filled again by recovery (from every segment still on disk)
//! and, on a standby, by every record it follows: a retry that reaches the new primary after
//! a failover gets the first answer too. An entry remembers its record's seq: an answer is
//! given only once that record is durable (and on the standby when one is required), so a
//! retry racing the first attempt never sees an unacknowledged answer.
//!
//! Bounded (oldest answers evicted first).

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
    /// Encoded answer and the seq of its `RequestDone` record.
    answers: HashMap<Key, (Vec<u8>, u64)>,
    order: VecDeque<Key>,
}

/// The cache key of a request id, if it is usable as one.
pub fn key(id: &Option<RequestId>) -> Option<(Vec<u8>, u64)> {
    let id = id.as_ref()?;
    if id.client_id.is_empty() || id.client_id.len() > MAX_CLIENT_ID_BYTES {
        return None;
    }
    Some((id.client_id.clone(), id.call_id))
}

impl RetryCache {
    /// The cached answer of `id`, decoded, with the seq of the record that holds it.
    pub fn get<R: prost::Message + Default>(&self, id: &Option<RequestId>) -> Option<(R, u64)> {
        let k = key(id)?;
        let inner = self.inner.lock();
        let (bytes, seq) = inner.answers.get(&k)?;
        R::decode(bytes.as_slice()).ok().map(|r| (r, *seq))
    }

    /// Remembers an answer (applied from a `RequestDone` record at `seq`).
    pub fn put(&self, client_id: &[u8], call_id: u64, answer: &[u8], seq: u64) {
        if client_id.is_empty() || client_id.len() > MAX_CLIENT_ID_BYTES {
            return;
        }
        let k = (client_id.to_vec(), call_id);
        let mut inner = self.inner.lock();
        if inner
            .answers
            .insert(k.clone(), (answer.to_vec(), seq))
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

    /// Entries held (for tests and status).
    pub fn len(&self) -> usize {
        self.inner.lock().answers.len()
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
        let bytes = prost::Message::encode_to_vec(&answer);
        cache.put(&[7; 16], 1, &bytes, 40);
        assert_eq!(
            cache.get::<LinkAtResponse>(&id(1)),
            Some((answer.clone(), 40))
        );
        assert_eq!(cache.get::<LinkAtResponse>(&id(2)), None);
        assert_eq!(cache.get::<LinkAtResponse>(&None), None);
        for call in 2..(RETRY_CACHE_ENTRIES as u64 + 2) {
            cache.put(&[7; 16], call, &bytes, 40 + call);
        }
        assert_eq!(cache.get::<LinkAtResponse>(&id(1)), None, "evicted");
        assert_eq!(cache.get::<LinkAtResponse>(&id(2)), Some((answer, 42)));
        assert_eq!(cache.len(), RETRY_CACHE_ENTRIES);
    }
}
