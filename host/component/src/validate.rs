//! Validation of entity components against the `stead:entity` world.
//!
//! The world is this repository's `wit/entity.wit`, embedded in the binary, so
//! a host always validates against the contract it was built with.
//!
//! Invariant: a component that passes [`validate`] imports nothing but
//! interfaces of the world (the host's `log` and shared types) with exactly
//! the world's signatures, and exports every function of the `handler`
//! interface with exactly the world's signatures. An optional interface of
//! the contract (`replay`, in world `entity-with-replay`) may be absent; if
//! exported it must be complete and exact too, since the host calls it.
//! Anything else is refused with an error that names the offending item.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use wit_parser::{Function, Resolve, Type, TypeDefKind, WorldId, WorldItem, WorldKey};

/// The WIT package every entity component must target.
pub const ENTITY_WIT: &str = include_str!("../../../wit/entity.wit");
/// The world inside [`ENTITY_WIT`] every component must target.
pub const ENTITY_WORLD: &str = "entity";
/// The world with the optional exports as well (what the SDK builds).
pub const FULL_WORLD: &str = "entity-with-replay";
/// The optional interface a host uses to replay many events per call.
pub const REPLAY_INTERFACE: &str = "stead:entity/replay@0.1.0";

/// Why bytes are not a valid entity component.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValidationError {
    #[error("not a WebAssembly binary: {0}")]
    NotWasm(String),
    #[error(
        "this is a core WebAssembly module, not a component: build it with `stead build`, \
         which turns the module into a component"
    )]
    CoreModule,
    #[error("the component is malformed: {0}")]
    Malformed(String),
    #[error(
        "the component imports `{name}`, which the stead:entity world does not offer \
         (a guest may import only: {allowed})"
    )]
    ForbiddenImport { name: String, allowed: String },
    #[error(
        "the component imports function `{function}` from `{interface}`, which the host does not offer"
    )]
    ForbiddenImportFunction { interface: String, function: String },
    #[error("the component does not export `{0}`, required by the stead:entity world")]
    MissingExport(String),
    #[error(
        "the component's export `{interface}` lacks function `{function}`, required by the stead:entity world"
    )]
    MissingFunction { interface: String, function: String },
    #[error("`{item}` has signature `{found}`, but the stead:entity world requires `{expected}`")]
    SignatureMismatch {
        item: String,
        found: String,
        expected: String,
    },
    /// The embedded WIT does not parse: a build defect, never caused by input.
    #[error("the embedded stead:entity WIT is invalid: {0}")]
    Contract(String),
}

/// What a valid component imports and exports, for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentReport {
    /// Imported interfaces, e.g. `stead:entity/host@0.1.0`.
    pub imports: Vec<String>,
    /// Exported interfaces with their functions, e.g.
    /// `stead:entity/handler@0.1.0` -> `[describe, ...]`.
    pub exports: BTreeMap<String, Vec<String>>,
}

impl std::fmt::Display for ComponentReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "world stead:entity/{ENTITY_WORLD}: ")?;
        write!(f, "imports [{}]", self.imports.join(", "))?;
        for (name, funcs) in &self.exports {
            write!(f, "; exports {name} {{{}}}", funcs.join(", "))?;
        }
        Ok(())
    }
}

/// The parsed contract: the world every component is checked against, and
/// the world with the optional exports.
pub struct Contract {
    resolve: Resolve,
    world: WorldId,
    full: Option<WorldId>,
}

impl Contract {
    /// Parses the embedded `wit/entity.wit`.
    pub fn embedded() -> Result<Self, ValidationError> {
        Self::parse(ENTITY_WIT)
    }

    /// Parses a WIT package text and selects its `entity` world (and its
    /// `entity-with-replay` world, when the text has one).
    pub fn parse(wit: &str) -> Result<Self, ValidationError> {
        let mut resolve = Resolve::default();
        let pkg = resolve
            .push_str("entity.wit", wit)
            .map_err(|e| ValidationError::Contract(format!("{e:#}")))?;
        let world = resolve
            .select_world(&[pkg], Some(ENTITY_WORLD))
            .map_err(|e| ValidationError::Contract(format!("{e:#}")))?;
        let full = resolve.select_world(&[pkg], Some(FULL_WORLD)).ok();
        Ok(Self {
            resolve,
            world,
            full,
        })
    }

    /// The resolved WIT and world, e.g. for building test components.
    pub fn resolve(&self) -> (&Resolve, WorldId) {
        (&self.resolve, self.world)
    }

    /// Checks that `bytes` are a component targeting this contract's world.
    pub fn validate(&self, bytes: &[u8]) -> Result<ComponentReport, ValidationError> {
        check_binary_kind(bytes)?;
        let mut validator =
            wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all());
        validator
            .validate_all(bytes)
            .map_err(|e| ValidationError::Malformed(e.to_string()))?;
        let decoded = wit_component::decode(bytes)
            .map_err(|e| ValidationError::Malformed(format!("{e:#}")))?;
        let (found, found_world) = match decoded {
            wit_component::DecodedWasm::Component(resolve, world) => (resolve, world),
            wit_component::DecodedWasm::WitPackage(..) => {
                return Err(ValidationError::Malformed(
                    "this is a WIT package, not an executable component".into(),
                ));
            }
        };
        let expected = Side::new(&self.resolve, self.world);
        let found = Side::new(&found, found_world);
        check_imports(&expected, &found)?;
        check_exports(&expected, &found, |_| true)?;
        if let Some(full) = self.full {
            // Optional exports: checked only where the component has them.
            let full = Side::new(&self.resolve, full);
            check_exports(&full, &found, |name| {
                !expected.exports.contains_key(name) && found.exports.contains_key(name)
            })?;
        }
        Ok(found.report())
    }
}

/// Validates `bytes` against the embedded contract.
pub fn validate(bytes: &[u8]) -> Result<ComponentReport, ValidationError> {
    Contract::embedded()?.validate(bytes)
}

fn check_binary_kind(bytes: &[u8]) -> Result<(), ValidationError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(ValidationError::NotWasm(format!(
            "it does not start with the wasm magic bytes `\\0asm` ({} bytes in all)",
            bytes.len()
        )));
    }
    if wasmparser::Parser::is_core_wasm(bytes) {
        return Err(ValidationError::CoreModule);
    }
    if !wasmparser::Parser::is_component(bytes) {
        return Err(ValidationError::NotWasm(
            "unknown wasm binary version or layer".into(),
        ));
    }
    Ok(())
}

/// One side of the comparison: a world in its resolve, with its items by name.
struct Side<'a> {
    resolve: &'a Resolve,
    imports: BTreeMap<String, &'a WorldItem>,
    exports: BTreeMap<String, &'a WorldItem>,
}

impl<'a> Side<'a> {
    fn new(resolve: &'a Resolve, world: WorldId) -> Self {
        let world = &resolve.worlds[world];
        let named = |items: &'a wit_parser::IndexMap<WorldKey, WorldItem>| {
            items
                .iter()
                .map(|(key, item)| (resolve.name_world_key(key), item))
                .collect::<BTreeMap<_, _>>()
        };
        Self {
            resolve,
            imports: named(&world.imports),
            exports: named(&world.exports),
        }
    }

    fn functions(&self, item: &'a WorldItem) -> Vec<&'a Function> {
        match item {
            WorldItem::Interface { id, .. } => {
                self.resolve.interfaces[*id].functions.values().collect()
            }
            WorldItem::Function(f) => vec![f],
            WorldItem::Type { .. } => Vec::new(),
        }
    }

    fn report(&self) -> ComponentReport {
        ComponentReport {
            imports: self
                .imports
                .iter()
                .filter(|(_, item)| !matches!(item, WorldItem::Type { .. }))
                .map(|(name, _)| name.clone())
                .collect(),
            exports: self
                .exports
                .iter()
                .map(|(name, item)| {
                    let funcs = self
                        .functions(item)
                        .iter()
                        .map(|f| f.name.clone())
                        .collect();
                    (name.clone(), funcs)
                })
                .collect(),
        }
    }
}

fn check_imports(expected: &Side<'_>, found: &Side<'_>) -> Result<(), ValidationError> {
    for (name, item) in &found.imports {
        if matches!(item, WorldItem::Type { .. }) {
            continue; // a bare type import carries no capability
        }
        let Some(offered) = expected.imports.get(name) else {
            let allowed = expected
                .imports
                .iter()
                .filter(|(_, item)| !matches!(item, WorldItem::Type { .. }))
                .map(|(name, _)| format!("`{name}`"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ValidationError::ForbiddenImport {
                name: name.clone(),
                allowed,
            });
        };
        let offered_funcs = expected.functions(offered);
        for func in found.functions(item) {
            let Some(host_func) = offered_funcs.iter().find(|f| f.name == func.name) else {
                return Err(ValidationError::ForbiddenImportFunction {
                    interface: name.clone(),
                    function: func.name.clone(),
                });
            };
            compare(
                &format!("import {name}#{}", func.name),
                expected.resolve,
                host_func,
                found.resolve,
                func,
            )?;
        }
    }
    Ok(())
}

/// Checks the exports of `expected` for which `required(name)` holds.
fn check_exports(
    expected: &Side<'_>,
    found: &Side<'_>,
    required: impl Fn(&str) -> bool,
) -> Result<(), ValidationError> {
    for (name, item) in expected.exports.iter().filter(|(n, _)| required(n)) {
        let Some(provided) = found.exports.get(name) else {
            return Err(ValidationError::MissingExport(name.clone()));
        };
        let provided_funcs = found.functions(provided);
        for func in expected.functions(item) {
            let Some(guest_func) = provided_funcs.iter().find(|f| f.name == func.name) else {
                return Err(ValidationError::MissingFunction {
                    interface: name.clone(),
                    function: func.name.clone(),
                });
            };
            compare(
                &format!("export {name}#{}", func.name),
                expected.resolve,
                func,
                found.resolve,
                guest_func,
            )?;
        }
    }
    Ok(())
}

fn compare(
    item: &str,
    expected_resolve: &Resolve,
    expected: &Function,
    found_resolve: &Resolve,
    found: &Function,
) -> Result<(), ValidationError> {
    let want = signature(expected_resolve, expected);
    let got = signature(found_resolve, found);
    if want == got {
        Ok(())
    } else {
        Err(ValidationError::SignatureMismatch {
            item: item.to_owned(),
            found: got,
            expected: want,
        })
    }
}

/// A function's signature with every named type expanded to its structure,
/// so two signatures compare equal exactly when their canonical ABI matches,
/// whichever resolve they come from.
fn signature(resolve: &Resolve, func: &Function) -> String {
    let mut out = String::from("func(");
    for (i, param) in func.params.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{}: ", param.name);
        render(resolve, &param.ty, &mut out);
    }
    out.push(')');
    if let Some(result) = &func.result {
        out.push_str(" -> ");
        render(resolve, result, &mut out);
    }
    out
}

fn render(resolve: &Resolve, ty: &Type, out: &mut String) {
    let id = match ty {
        Type::Bool => return out.push_str("bool"),
        Type::U8 => return out.push_str("u8"),
        Type::U16 => return out.push_str("u16"),
        Type::U32 => return out.push_str("u32"),
        Type::U64 => return out.push_str("u64"),
        Type::S8 => return out.push_str("s8"),
        Type::S16 => return out.push_str("s16"),
        Type::S32 => return out.push_str("s32"),
        Type::S64 => return out.push_str("s64"),
        Type::F32 => return out.push_str("f32"),
        Type::F64 => return out.push_str("f64"),
        Type::Char => return out.push_str("char"),
        Type::String => return out.push_str("string"),
        Type::ErrorContext => return out.push_str("error-context"),
        Type::Id(id) => *id,
    };
    let def = &resolve.types[id];
    let opt = |out: &mut String, ty: &Option<Type>| match ty {
        Some(ty) => render(resolve, ty, out),
        None => out.push('_'),
    };
    match &def.kind {
        TypeDefKind::Type(inner) => render(resolve, inner, out),
        TypeDefKind::Record(r) => {
            out.push_str("record{");
            for (i, field) in r.fields.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                let _ = write!(out, "{}: ", field.name);
                render(resolve, &field.ty, out);
            }
            out.push('}');
        }
        TypeDefKind::Variant(v) => {
            out.push_str("variant{");
            for (i, case) in v.cases.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&case.name);
                if let Some(ty) = &case.ty {
                    out.push('(');
                    render(resolve, ty, out);
                    out.push(')');
                }
            }
            out.push('}');
        }
        TypeDefKind::Enum(e) => {
            let cases: Vec<&str> = e.cases.iter().map(|c| c.name.as_str()).collect();
            let _ = write!(out, "enum{{{}}}", cases.join(", "));
        }
        TypeDefKind::Flags(f) => {
            let flags: Vec<&str> = f.flags.iter().map(|c| c.name.as_str()).collect();
            let _ = write!(out, "flags{{{}}}", flags.join(", "));
        }
        TypeDefKind::Tuple(t) => {
            out.push_str("tuple<");
            for (i, ty) in t.types.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                render(resolve, ty, out);
            }
            out.push('>');
        }
        TypeDefKind::Option(ty) => {
            out.push_str("option<");
            render(resolve, ty, out);
            out.push('>');
        }
        TypeDefKind::Result(r) => {
            out.push_str("result<");
            opt(out, &r.ok);
            out.push_str(", ");
            opt(out, &r.err);
            out.push('>');
        }
        TypeDefKind::List(ty) => {
            out.push_str("list<");
            render(resolve, ty, out);
            out.push('>');
        }
        TypeDefKind::Map(k, v) => {
            out.push_str("map<");
            render(resolve, k, out);
            out.push_str(", ");
            render(resolve, v, out);
            out.push('>');
        }
        TypeDefKind::FixedLengthList(ty, n) => {
            out.push_str("list<");
            render(resolve, ty, out);
            let _ = write!(out, ", {n}>");
        }
        TypeDefKind::Future(ty) => {
            out.push_str("future<");
            opt(out, ty);
            out.push('>');
        }
        TypeDefKind::Stream(ty) => {
            out.push_str("stream<");
            opt(out, ty);
            out.push('>');
        }
        // The world has no resources; naming them is enough to refuse them.
        TypeDefKind::Resource | TypeDefKind::Handle(_) | TypeDefKind::Unknown => {
            let _ = write!(out, "resource {}", def.name.as_deref().unwrap_or("?"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{component_from_wit, component_from_wit_world, contract_with};

    #[test]
    fn a_component_of_the_exact_world_is_valid_and_reported() {
        let report = validate(&component_from_wit(ENTITY_WIT)).expect("valid");
        assert!(
            report
                .imports
                .contains(&"stead:entity/host@0.1.0".to_string())
        );
        let handler = &report.exports["stead:entity/handler@0.1.0"];
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
        assert!(report.exports.contains_key("stead:entity/handler@0.1.0"));
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
                interface: "stead:entity/handler@0.1.0".into(),
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
            ValidationError::MissingExport("stead:entity/handler@0.1.0".into())
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
                assert_eq!(name, "stead:entity/net@0.1.0");
                assert!(allowed.contains("stead:entity/host@0.1.0"), "{allowed}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("imports `stead:entity/net@0.1.0`"));
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
                interface: "stead:entity/host@0.1.0".into(),
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
                assert_eq!(item, "export stead:entity/handler@0.1.0#describe");
                assert!(found.contains("snapshot-every: u64"), "{found}");
                assert!(expected.contains("snapshot-every: u32"), "{expected}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_component_of_another_package_version_is_refused() {
        let wit = ENTITY_WIT.replace("package stead:entity@0.1.0;", "package stead:entity@0.2.0;");
        let err = validate(&component_from_wit(&wit)).unwrap_err();
        assert!(
            matches!(&err, ValidationError::ForbiddenImport { name, .. } if name.ends_with("@0.2.0")),
            "{err:?}"
        );
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
}
