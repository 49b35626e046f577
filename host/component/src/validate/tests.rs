//! Validation against every served contract version: what passes, what is
//! refused, and that each refusal names the offending item.

use super::*;
use crate::testing::{component_from_wit, component_from_wit_world, contract_with};

const REPLAY_INTERFACE: &str = "stead:entity/replay@0.2.0";

#[test]
fn a_component_of_the_frozen_0_1_0_world_is_valid_and_reported_as_0_1_0() {
    for world in [ENTITY_WORLD, FULL_WORLD] {
        let report = validate(&component_from_wit_world(ENTITY_WIT_0_1_0, world)).expect("valid");
        assert_eq!(report.contract, ContractVersion::V0_1_0);
        assert!(report.exports.contains_key("stead:entity/handler@0.1.0"));
        assert!(
            report
                .to_string()
                .starts_with("world stead:entity/entity@0.1.0")
        );
    }
}

#[test]
fn a_component_of_the_current_world_is_reported_as_current() {
    let report = validate(&component_from_wit(ENTITY_WIT)).expect("valid");
    assert_eq!(report.contract, ContractVersion::CURRENT);
    assert_eq!(ContractVersion::CURRENT.as_str(), "0.2.0");
}

#[test]
fn a_component_of_a_version_the_host_does_not_serve_is_refused_naming_both() {
    let wit = contract_with("package stead:entity@0.2.0;", "package stead:entity@0.3.0;");
    let err = validate(&component_from_wit(&wit)).unwrap_err();
    assert_eq!(
        err,
        ValidationError::UnsupportedContract {
            found: "0.3.0".into(),
            supported: "0.1.0, 0.2.0".into()
        }
    );
    assert!(err.to_string().contains("serves 0.1.0, 0.2.0"), "{err}");
}

#[test]
fn a_0_1_0_component_with_the_0_2_0_effects_is_refused_as_a_mismatch() {
    // The 0.1.0 handler returning 0.2.0's effects: a guest built from a
    // hand-edited contract must not pass as either version.
    let wit = ENTITY_WIT.replace("package stead:entity@0.2.0;", "package stead:entity@0.1.0;");
    let err = validate(&component_from_wit(&wit)).unwrap_err();
    assert!(
        matches!(&err, ValidationError::SignatureMismatch { item, .. } if item.contains("handle-command")),
        "{err:?}"
    );
}

#[test]
fn every_frozen_contract_parses_as_its_version() {
    for version in ContractVersion::ALL {
        let contract = Contract::parse(version.wit()).expect("parses");
        assert_eq!(contract.version(), version);
    }
}

#[test]
fn a_component_of_the_exact_world_is_valid_and_reported() {
    let report = validate(&component_from_wit(ENTITY_WIT)).expect("valid");
    assert!(
        report
            .imports
            .contains(&"stead:entity/host@0.2.0".to_string())
    );
    let handler = &report.exports["stead:entity/handler@0.2.0"];
    for f in [
        "describe",
        "initial-state",
        "handle-command",
        "apply-event",
        "view",
    ] {
        assert!(handler.iter().any(|h| h == f), "{f} missing from {report}");
    }
}

#[test]
fn a_component_with_the_optional_replay_export_is_valid_and_reported() {
    let report = validate(&component_from_wit_world(ENTITY_WIT, FULL_WORLD)).expect("valid");
    assert_eq!(
        report.exports[REPLAY_INTERFACE],
        vec!["apply-events".to_string()]
    );
    assert!(report.exports.contains_key("stead:entity/handler@0.2.0"));
}

#[test]
fn a_replay_export_with_another_signature_is_refused_naming_it() {
    let wit = contract_with(
        "apply-events: func(state: list<u8>, events: list<list<u8>>)",
        "apply-events: func(state: list<u8>, events: list<u8>)",
    );
    let err = validate(&component_from_wit_world(&wit, FULL_WORLD)).unwrap_err();
    match &err {
        ValidationError::SignatureMismatch { item, .. } => {
            assert_eq!(item, &format!("export {REPLAY_INTERFACE}#apply-events"));
        }
        other => panic!("expected a signature mismatch, got {other:?}"),
    }
}

#[test]
fn a_replay_export_without_its_function_is_refused_naming_it() {
    let wit = contract_with(
        "apply-events: func(state: list<u8>, events: list<list<u8>>) -> result<list<u8>, string>;",
        "",
    );
    let err = validate(&component_from_wit_world(&wit, FULL_WORLD)).unwrap_err();
    assert_eq!(
        err,
        ValidationError::MissingFunction {
            interface: REPLAY_INTERFACE.into(),
            function: "apply-events".into()
        }
    );
}

#[test]
fn a_component_without_the_view_export_is_refused_naming_it() {
    let wit = contract_with(
        "view: func(state: list<u8>) -> result<list<u8>, string>;",
        "",
    );
    let err = validate(&component_from_wit(&wit)).unwrap_err();
    assert_eq!(
        err,
        ValidationError::MissingFunction {
            interface: "stead:entity/handler@0.2.0".into(),
            function: "view".into()
        }
    );
    assert!(err.to_string().contains("lacks function `view`"), "{err}");
}

#[test]
fn a_component_exporting_no_handler_is_refused() {
    let wit = contract_with("export handler;", "");
    let err = validate(&component_from_wit(&wit)).unwrap_err();
    assert_eq!(
        err,
        ValidationError::MissingExport("stead:entity/handler@0.2.0".into())
    );
}

#[test]
fn a_component_importing_an_interface_the_world_lacks_is_refused_naming_it() {
    let wit = contract_with(
        "world entity {\n    import host;",
        "interface net { connect: func(addr: string) -> u32; }\n\
         world entity {\n    import host;\n    import net;",
    );
    let err = validate(&component_from_wit(&wit)).unwrap_err();
    match &err {
        ValidationError::ForbiddenImport { name, allowed } => {
            assert_eq!(name, "stead:entity/net@0.2.0");
            assert!(allowed.contains("stead:entity/host@0.2.0"), "{allowed}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("imports `stead:entity/net@0.2.0`"));
}

#[test]
fn a_component_importing_a_wasi_interface_is_refused_naming_it() {
    let wit = format!(
        "{ENTITY_WIT}\npackage wasi:clocks@0.2.0 {{ interface wall-clock {{ now: func() -> u64; }} }}"
    )
    .replace(
        "world entity {\n    import host;",
        "world entity {\n    import host;\n    import wasi:clocks/wall-clock@0.2.0;",
    );
    let err = validate(&component_from_wit(&wit)).unwrap_err();
    assert!(
        matches!(&err, ValidationError::ForbiddenImport { name, .. } if name == "wasi:clocks/wall-clock@0.2.0"),
        "{err:?}"
    );
}

#[test]
fn a_component_importing_an_extra_host_function_is_refused_naming_it() {
    let wit = contract_with(
        "log: func(level: log-level, message: string);",
        "log: func(level: log-level, message: string);\n    now: func() -> u64;",
    );
    let err = validate(&component_from_wit(&wit)).unwrap_err();
    assert_eq!(
        err,
        ValidationError::ForbiddenImportFunction {
            interface: "stead:entity/host@0.2.0".into(),
            function: "now".into()
        }
    );
}

#[test]
fn a_component_with_a_different_record_layout_is_refused_with_both_signatures() {
    let wit = contract_with("snapshot-every: u32,", "snapshot-every: u64,");
    let err = validate(&component_from_wit(&wit)).unwrap_err();
    match &err {
        ValidationError::SignatureMismatch {
            item,
            found,
            expected,
        } => {
            assert_eq!(item, "export stead:entity/handler@0.2.0#describe");
            assert!(found.contains("snapshot-every: u64"), "{found}");
            assert!(expected.contains("snapshot-every: u32"), "{expected}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_core_module_is_refused_as_not_a_component() {
    let core = wat::parse_str("(module (func (export \"handle\")))").expect("wat");
    assert_eq!(validate(&core).unwrap_err(), ValidationError::CoreModule);
}

#[test]
fn random_bytes_are_refused_as_not_wasm() {
    let err = validate(b"this is certainly not webassembly").unwrap_err();
    assert!(matches!(err, ValidationError::NotWasm(_)), "{err:?}");
    assert!(err.to_string().contains("magic"), "{err}");
    assert!(matches!(
        validate(&[]).unwrap_err(),
        ValidationError::NotWasm(_)
    ));
}

#[test]
fn a_truncated_component_is_refused_as_malformed() {
    let bytes = component_from_wit(ENTITY_WIT);
    let err = validate(&bytes[..bytes.len() / 2]).unwrap_err();
    assert!(matches!(err, ValidationError::Malformed(_)), "{err:?}");
}

#[test]
fn a_wit_package_binary_is_refused_as_not_executable() {
    let (resolve, world) = {
        let c = Contract::embedded().expect("contract");
        let (r, w) = c.resolve();
        (r.clone(), w)
    };
    let pkg = resolve.worlds[world].package.expect("package");
    let bytes = wit_component::encode(&resolve, pkg).expect("encodes");
    let err = validate(&bytes).unwrap_err();
    assert!(err.to_string().contains("WIT package"), "{err}");
}
