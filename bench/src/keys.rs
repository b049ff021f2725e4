//! Realistic keys: Zipf-distributed items (a few very hot items, a long tail)
//! and uniform users, from a seeded generator so runs are comparable.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};

/// The item type every benchmark event uses.
pub const ITEM_TYPE: i32 = 1;

/// Draws (user, item) pairs.
pub struct Keys {
    zipf: Zipf<f64>,
    users: i64,
    rng: StdRng,
}

impl Keys {
    /// `items` items ranked by Zipf exponent `exponent`, `users` uniform users.
    pub fn new(items: u64, exponent: f64, users: i64, seed: u64) -> anyhow::Result<Self> {
        Ok(Self {
            zipf: Zipf::new(items as f64, exponent)?,
            users,
            rng: StdRng::seed_from_u64(seed),
        })
    }

    /// The next (user_id, item_id), both ≥ 1.
    pub fn next_pair(&mut self) -> (i64, i64) {
        let item = self.zipf.sample(&mut self.rng) as i64;
        let user = self.rng.random_range(1..=self.users);
        (user, item.max(1))
    }

    /// The JSON body of a like request for the next pair.
    pub fn next_body(&mut self) -> String {
        let (user, item) = self.next_pair();
        like_body(user, item)
    }
}

/// The body of `POST /v1/likes`.
pub fn like_body(user: i64, item: i64) -> String {
    format!(r#"{{"user_id":{user},"item_id":{item},"item_type":{ITEM_TYPE}}}"#)
}
