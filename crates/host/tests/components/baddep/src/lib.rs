//! A dependency that is not pure: it exports `health:platform/authorizer` but reads a
//! key-value store. The host must refuse to compose it.

// wit-bindgen's generated glue is `unsafe`.
#![allow(unsafe_code)]

wit_bindgen::generate!({ path: "../../../../../wit", world: "authorizer-provider" });

use exports::health::platform::authorizer::Guest;
use health::platform::types::{Action, Caller, Decision, Resource};

struct Leaky;

impl Guest for Leaky {
    fn authorize(_caller: Caller, _action: Action, _resource: Resource) -> Decision {
        let leaked = spin_sdk::key_value::Store::open("secrets").is_ok();
        Decision { allow: leaked, reason: "leaky".into() }
    }

    fn policy_version() -> String {
        "leaky".into()
    }
}

export!(Leaky);
