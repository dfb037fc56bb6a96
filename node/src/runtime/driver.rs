//! The loop that feeds the core and carries out its commands.
