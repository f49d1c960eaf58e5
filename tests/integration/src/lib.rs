//! Helpers shared by the integration tests: a store on the local server, a simulator.
