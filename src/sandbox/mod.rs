//! Simulators of every upstream, speaking the real protocols over real HTTP on loopback
//! with the real cryptography. Feature `sandbox`; not in the production image.
