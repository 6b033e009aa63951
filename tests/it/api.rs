//! api scenarios.
