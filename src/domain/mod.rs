//! Domain types: the validated shipment request, the PIN, and the stored shipment record
//! with its state machine. Past the HTTP edge, invalid requests cannot be represented.

pub mod codes;
pub mod credential;
pub mod fields;
pub mod pin;
pub mod request;
pub mod shipment;

pub use credential::AttestedCredential;
pub use fields::{UserId, ValidationError};
pub use pin::Pin;
pub use request::ShipmentRequest;
pub use shipment::{
    public_view, PublicError, PublicState, RecordError, Resolution, ShipmentRecord, Step,
    TransitionError,
};
