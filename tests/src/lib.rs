//! Multi-cluster tests with real `shoal` processes (the runtime issue adds them).
