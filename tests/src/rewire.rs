//! A test's slice of the stack as one service sees it when some of its
//! connections go elsewhere (a private Redis, a proxy in front of PostgreSQL):
//! the same topic, group, database and prefix, other addresses.

use likes_infra::settings::StackSettings;

use crate::TestEnv;

/// `env` with its stack settings changed by `change`; the test's own
/// connections (`db`, `redis`) stay direct.
pub fn rewired(env: &TestEnv, change: impl FnOnce(&mut StackSettings)) -> TestEnv {
    let mut stack = env.stack.clone();
    change(&mut stack);
    TestEnv {
        stack,
        db: env.db.clone(),
        shards: env.shards.clone(),
        redis: env.redis.clone(),
        partitions: env.partitions,
        suffix: env.suffix.clone(),
        leftovers: env.leftovers.clone(),
    }
}
