//! Floors: the least work any lock on a backend has to do, done with the backend's raw
//! interface. distlock is reported as a ratio to these.
//!
//! One module per backend; a Redis floor (PING round trip) or a PostgreSQL floor (`SELECT 1`)
//! goes beside [`file`].

pub mod file;
pub mod keys;
pub mod net;
