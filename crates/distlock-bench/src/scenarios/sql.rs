//! Scenarios of the sql backends (being written).

use super::Scenario;

/// This module's scenarios, in the order they run.
pub fn scenarios() -> Vec<Box<dyn Scenario>> {
    Vec::new()
}
