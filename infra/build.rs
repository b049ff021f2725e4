//! Rebuilds `likes-infra` when a migration is added or changed: `sqlx::migrate!`
//! embeds `migrations/` at compile time and cargo would not notice otherwise.

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
