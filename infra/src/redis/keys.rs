//! Every Redis key this project writes, named in one place. All keys of a
//! deployment start with its prefix (`REDIS_KEY_PREFIX`), so deployments and
//! tests can share one Redis.
//!
//! | key | holds | written by |
//! |---|---|---|
//! | `<prefix>count:<type>:<id>` | `"<count>:<stamp>"` | [`super::counts`], [`super::repair`] |
//! | `<prefix>likers:<type>:<id>` | sorted set of user ids by like time | [`super::likers`] |
//! | `<prefix>likers_stamp:{<likers key>}` | the log offset the likers set reflects | [`super::likers`] |
//! | `<prefix>bucket:{<user_id>}` | the token bucket as GCRA's `tat`, µs | [`super::ratelimit`] |
//! | `<prefix>dedup:{<user_id>}:<type>:<id>` | quick-dedup memo hash | [`super::dedup`] |
//!
//! The `{<user_id>}` hash tags keep one user's keys in one Redis Cluster slot.
//! The likers stamp's tag is its likers key, so both sit in the likers key's
//! slot and one script may touch the pair; a user's bucket and memos share a
//! slot the same way (one script takes the token and recalls the memo). Every
//! other script touches one key.

use likes_domain::{ItemKey, UserId};

/// The key names of one deployment (one prefix); cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// The keys under `prefix` (used verbatim, e.g. `"likes:"`).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }

    /// The prefix every key starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// An item's cached count.
    pub fn count(&self, item: ItemKey) -> String {
        format!(
            "{}count:{}:{}",
            self.prefix,
            item.item_type.get(),
            item.item_id.get()
        )
    }

    /// A SCAN MATCH pattern for every cached count of this prefix (the prefix's
    /// glob characters escaped so they match only themselves).
    pub fn all_counts(&self) -> String {
        format!("{}count:*", escape_glob(&self.prefix))
    }

    /// A SCAN MATCH pattern for every key of this prefix.
    pub fn everything(&self) -> String {
        format!("{}*", escape_glob(&self.prefix))
    }

    /// An item's most recent likers.
    pub fn likers(&self, item: ItemKey) -> String {
        format!(
            "{}likers:{}:{}",
            self.prefix,
            item.item_type.get(),
            item.item_id.get()
        )
    }

    /// The stamp of an item's likers set: the log offset of the newest change
    /// it reflects. Tagged with the likers key itself, so on Redis Cluster it
    /// hashes to the same slot (a key without braces hashes whole; with a
    /// prefix holding a tag, both hash by that same first tag).
    pub fn likers_stamp(&self, item: ItemKey) -> String {
        format!("{}likers_stamp:{{{}}}", self.prefix, self.likers(item))
    }

    /// A user's rate-limit bucket: a string (GCRA's `tat`), under a name no
    /// hash form of the bucket ever had, so instances of both forms in one
    /// rollout never read each other's key as the wrong type (`WRONGTYPE`);
    /// while both run, a user may get each form's allowance.
    pub fn rate(&self, user: UserId) -> String {
        format!("{}bucket:{{{}}}", self.prefix, user.get())
    }

    /// The quick-dedup memo of one user on one item.
    pub fn dedup(&self, user: UserId, item: ItemKey) -> String {
        format!(
            "{}dedup:{{{}}}:{}:{}",
            self.prefix,
            user.get(),
            item.item_type.get(),
            item.item_id.get()
        )
    }
}

/// Escapes the glob characters of a literal for SCAN MATCH.
fn escape_glob(literal: &str) -> String {
    let mut out = String::with_capacity(literal.len());
    for c in literal.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item() -> ItemKey {
        ItemKey::parse(3, 42).unwrap()
    }

    fn user() -> UserId {
        UserId::parse(7).unwrap()
    }

    #[test]
    fn every_key_starts_with_the_prefix_and_names_its_subject() {
        let keys = Keys::new("likes:");
        assert_eq!(keys.count(item()), "likes:count:3:42");
        assert_eq!(keys.likers(item()), "likes:likers:3:42");
        assert_eq!(
            keys.likers_stamp(item()),
            "likes:likers_stamp:{likes:likers:3:42}"
        );
        assert_eq!(keys.rate(user()), "likes:bucket:{7}");
        assert_eq!(keys.dedup(user(), item()), "likes:dedup:{7}:3:42");
    }

    #[test]
    fn a_likers_set_and_its_stamp_share_a_cluster_slot() {
        use redis::cluster_routing::Slot;
        for prefix in ["likes:", "t-{abc}:", ""] {
            let keys = Keys::new(prefix);
            assert_eq!(
                Slot::for_key(keys.likers(item())),
                Slot::for_key(keys.likers_stamp(item())),
                "prefix {prefix:?}"
            );
        }
    }

    #[test]
    fn a_user_s_bucket_and_memos_share_a_cluster_slot() {
        use redis::cluster_routing::Slot;
        for prefix in ["likes:", "t-{abc}:", ""] {
            let keys = Keys::new(prefix);
            assert_eq!(
                Slot::for_key(keys.rate(user())),
                Slot::for_key(keys.dedup(user(), item())),
                "prefix {prefix:?}"
            );
        }
    }

    #[test]
    fn the_count_pattern_matches_only_this_prefix() {
        assert_eq!(Keys::new("likes:").all_counts(), "likes:count:*");
        assert_eq!(
            Keys::new("a*b?[c]\\").all_counts(),
            "a\\*b\\?\\[c\\]\\\\count:*"
        );
    }
}
