//! The Qualys simulator as a library, so tests can run it in-process.
