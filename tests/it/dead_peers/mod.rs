//! Dead peers: a database connection that goes silent, as when a node loses power or the network
//! is cut, so that no reset ever arrives. Every connection gives such a peer up on both ends within
//! tens of seconds (`postgres.dead_peers`), and the relay's lock moves on.

mod relay;
mod settings;
