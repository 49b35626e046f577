//! Version 2 of the entity type `versioned`, for the host's redeploy tests:
//! the same logic and state layout as every version; replies name the version.

const VERSION_NUMBER: u32 = 2;
const VERSION_TEXT: &str = "2.0.0";

include!("../../versioned-common/counter.rs");
