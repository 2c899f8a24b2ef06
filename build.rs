//! Rebuilds the crate when a migration is added or changed: `refinery::embed_migrations!` reads
//! `migrations/` while compiling, and cargo does not know that folder otherwise.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
