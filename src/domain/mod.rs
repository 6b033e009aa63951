//! Domain types: the validated shipment request, the PIN, and the stored shipment record
//! with its state machine. Past the HTTP edge, invalid requests cannot be represented.

pub mod credential;
pub mod pin;
pub mod request;
pub mod shipment;
pub mod wire;

pub use credential::AttestedCredential;
pub use pin::Pin;
pub use request::{ShipmentRequest, UserId, ValidationError};
pub use shipment::{
    public_view, PublicError, PublicState, RecordError, Resolution, ShipmentRecord, Step,
    TransitionError,
};
