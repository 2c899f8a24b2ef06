//! CDISC ODM 1.3 in: the hardened XML reader ([`xml`]), what the rest of the code sees of clinical
//! data ([`model`]), the ClinicalData reader that yields one form instance at a time
//! ([`clinical`]), the writer of one form instance back to a minimal ODM document ([`write`]),
//! which `odm import` publishes and the daemon reads with the same reader, and the metadata
//! reader ([`metadata`]) that `study from-odm` converts into a study protocol.
//!
//! Nothing here does I/O beyond reading the [`std::io::BufRead`] it is given; nothing here knows
//! the study protocol: mapping values to a record is the pipeline's.

pub mod clinical;
pub mod metadata;
pub mod model;
pub mod walk;
pub mod write;
pub mod xml;
