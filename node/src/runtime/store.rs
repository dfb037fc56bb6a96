//! The sled store.
