//! The example guests, built from source with the library's guest build,
//! are valid `stead:entity` components; their raw core modules are not.

use stead_component::{ValidationError, validate};
use stead_tests::{build_guests as built_guests, root};

#[test]
fn account_and_cart_build_into_components_that_validate_against_wit() {
    let built = built_guests();
    for name in ["account", "cart"] {
        let component = built
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("{name} was not built: {built:?}"));
        assert_eq!(
            component.path,
            root().join(format!("target/guests/{name}.wasm"))
        );
        let bytes = std::fs::read(&component.path).expect("component file");
        assert_eq!(bytes.len() as u64, component.size);
        let report = validate(&bytes).expect("valid component");
        assert_eq!(report.contract, stead_component::ContractVersion::CURRENT);
        // Only the world's interfaces; wit-component drops `host` when unused.
        for import in &report.imports {
            assert!(
                ["stead:entity/types@0.2.0", "stead:entity/host@0.2.0"].contains(&import.as_str()),
                "{name} imports {import}"
            );
        }
        assert_eq!(
            report.exports["stead:entity/handler@0.2.0"],
            [
                "describe",
                "initial-state",
                "handle-command",
                "apply-event",
                "view"
            ]
        );
    }
}

#[test]
fn a_second_build_with_nothing_changed_rewrites_nothing() {
    built_guests();
    let again = built_guests();
    assert!(again.iter().all(|c| !c.changed), "{again:?}");
}

#[test]
fn the_raw_core_module_of_a_guest_is_refused_as_not_a_component() {
    built_guests();
    let core = root().join("target/wasm-build/wasm32-unknown-unknown/release/account.wasm");
    let bytes = std::fs::read(&core).expect("core module");
    assert_eq!(validate(&bytes).unwrap_err(), ValidationError::CoreModule);
}

#[test]
fn a_guest_component_with_its_tail_cut_off_is_refused_as_malformed() {
    let built = built_guests();
    let bytes = std::fs::read(&built[0].path).expect("component file");
    let err = validate(&bytes[..bytes.len() - 100]).unwrap_err();
    assert!(matches!(err, ValidationError::Malformed(_)), "{err:?}");
}
