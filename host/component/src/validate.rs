//! Validation of entity components against the `stead:entity` worlds.
//!
//! The contracts are this repository's `wit/entity.wit` (the current
//! version) and every frozen version under `wit/frozen/`, embedded in the
//! binary, so a host validates against the contracts it was built to serve.
//! A component's version is the one of the `handler` interface it exports;
//! it is then held to that version's world alone.
//!
//! Invariant: a component that passes [`validate`] targets one
//! [`ContractVersion`]: it imports nothing but interfaces of that version's
//! world (the host's `log` and shared types) with exactly the world's
//! signatures, and exports every function of its `handler` interface with
//! exactly the world's signatures. An optional interface of the contract
//! (`replay`, in world `entity-with-replay`) may be absent; if exported it
//! must be complete and exact too, since the host calls it. Anything else
//! is refused with an error that names the offending item.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::OnceLock;

use wit_parser::{Function, Resolve, Type, TypeDefKind, WorldId, WorldItem, WorldKey};

/// The current WIT package (`stead:entity@0.2.0`): what the SDK builds.
pub const ENTITY_WIT: &str = include_str!("../../../wit/entity.wit");
/// The frozen `stead:entity@0.1.0` package: components without sends or
/// timers, served exactly as before 0.2.0.
pub const ENTITY_WIT_0_1_0: &str = include_str!("../../../wit/frozen/0.1.0/entity.wit");
/// The world inside each contract every component must target.
pub const ENTITY_WORLD: &str = "entity";
/// The world with the optional exports as well (what the SDK builds).
pub const FULL_WORLD: &str = "entity-with-replay";

/// A version of the `stead:entity` contract this host serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContractVersion {
    /// Events, state and reply.
    V0_1_0,
    /// 0.1.0 plus sends to other entities and durable timers in `effects`.
    V0_2_0,
}

impl ContractVersion {
    /// Every version served, oldest first.
    pub const ALL: [ContractVersion; 2] = [ContractVersion::V0_1_0, ContractVersion::V0_2_0];
    /// The version the SDK builds and [`ENTITY_WIT`] holds.
    pub const CURRENT: ContractVersion = ContractVersion::V0_2_0;

    /// `0.1.0`, `0.2.0`.
    pub fn as_str(self) -> &'static str {
        match self {
            ContractVersion::V0_1_0 => "0.1.0",
            ContractVersion::V0_2_0 => "0.2.0",
        }
    }

    /// The version's WIT package text.
    pub fn wit(self) -> &'static str {
        match self {
            ContractVersion::V0_1_0 => ENTITY_WIT_0_1_0,
            ContractVersion::V0_2_0 => ENTITY_WIT,
        }
    }

    /// The full name of one of the version's interfaces, e.g.
    /// `stead:entity/handler@0.2.0`.
    pub fn interface(self, name: &str) -> String {
        format!("stead:entity/{name}@{}", self.as_str())
    }

    /// The version whose number is `version` (`0.2.0`).
    pub fn parse(version: &str) -> Option<ContractVersion> {
        Self::ALL.into_iter().find(|v| v.as_str() == version)
    }

    /// Whether the version's effects carry sends and timers.
    pub fn has_messaging(self) -> bool {
        self >= ContractVersion::V0_2_0
    }

    fn supported() -> String {
        Self::ALL.map(ContractVersion::as_str).join(", ")
    }
}

impl std::fmt::Display for ContractVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why bytes are not a valid entity component.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
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
        "the component targets stead:entity@{found}, which this host does not serve \
         (it serves {supported}): build it with an SDK of a served version, or upgrade the host"
    )]
    UnsupportedContract { found: String, supported: String },
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

/// What a valid component targets, imports and exports, for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentReport {
    /// The contract version it was validated against.
    pub contract: ContractVersion,
    /// Imported interfaces, e.g. `stead:entity/host@0.2.0`.
    pub imports: Vec<String>,
    /// Exported interfaces with their functions, e.g.
    /// `stead:entity/handler@0.2.0` -> `[describe, ...]`.
    pub exports: BTreeMap<String, Vec<String>>,
}

impl std::fmt::Display for ComponentReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "world stead:entity/{ENTITY_WORLD}@{}: ", self.contract)?;
        write!(f, "imports [{}]", self.imports.join(", "))?;
        for (name, funcs) in &self.exports {
            write!(f, "; exports {name} {{{}}}", funcs.join(", "))?;
        }
        Ok(())
    }
}

/// One parsed contract version: the world every component of that version
/// is checked against, and the world with the optional exports.
pub struct Contract {
    version: ContractVersion,
    resolve: Resolve,
    world: WorldId,
    full: Option<WorldId>,
}

impl Contract {
    /// Parses the embedded current contract (`wit/entity.wit`).
    pub fn embedded() -> Result<Self, ValidationError> {
        Self::parse(ENTITY_WIT)
    }

    /// Parses a WIT package text of one of the served versions and selects
    /// its `entity` world (and its `entity-with-replay` world, when the text
    /// has one).
    pub fn parse(wit: &str) -> Result<Self, ValidationError> {
        let contract = |e: String| ValidationError::Contract(e);
        let mut resolve = Resolve::default();
        let pkg = resolve
            .push_str("entity.wit", wit)
            .map_err(|e| contract(format!("{e:#}")))?;
        let version = resolve.packages[pkg]
            .name
            .version
            .as_ref()
            .and_then(|v| ContractVersion::parse(&v.to_string()))
            .ok_or_else(|| {
                contract(format!(
                    "{} is no served version",
                    resolve.packages[pkg].name
                ))
            })?;
        let world = resolve
            .select_world(&[pkg], Some(ENTITY_WORLD))
            .map_err(|e| contract(format!("{e:#}")))?;
        let full = resolve.select_world(&[pkg], Some(FULL_WORLD)).ok();
        Ok(Self {
            version,
            resolve,
            world,
            full,
        })
    }

    /// The version this contract is.
    pub fn version(&self) -> ContractVersion {
        self.version
    }

    /// The resolved WIT and world, e.g. for building test components.
    pub fn resolve(&self) -> (&Resolve, WorldId) {
        (&self.resolve, self.world)
    }

    /// Checks that `bytes` are a component targeting this contract's world.
    pub fn validate(&self, bytes: &[u8]) -> Result<ComponentReport, ValidationError> {
        let (found, world) = decode(bytes)?;
        self.check(&found, world)
    }

    fn check(&self, found: &Resolve, world: WorldId) -> Result<ComponentReport, ValidationError> {
        let expected = Side::new(&self.resolve, self.world);
        let found = Side::new(found, world);
        check_imports(&expected, &found)?;
        check_exports(&expected, &found, |_| true)?;
        if let Some(full) = self.full {
            // Optional exports: checked only where the component has them.
            let full = Side::new(&self.resolve, full);
            check_exports(&full, &found, |name| {
                !expected.exports.contains_key(name) && found.exports.contains_key(name)
            })?;
        }
        Ok(found.report(self.version))
    }
}

/// Every served contract, parsed once per process.
fn contracts() -> Result<&'static [Contract], ValidationError> {
    static CONTRACTS: OnceLock<Result<Vec<Contract>, ValidationError>> = OnceLock::new();
    CONTRACTS
        .get_or_init(|| {
            ContractVersion::ALL
                .into_iter()
                .map(|version| Contract::parse(version.wit()))
                .collect()
        })
        .as_ref()
        .map(Vec::as_slice)
        .map_err(Clone::clone)
}

/// Validates `bytes` against the contract version whose `handler` it
/// exports (the current version's rules when it exports none).
pub fn validate(bytes: &[u8]) -> Result<ComponentReport, ValidationError> {
    let (found, world) = decode(bytes)?;
    let contracts = contracts()?;
    let handler_prefix = "stead:entity/handler@";
    let targeted = found.worlds[world]
        .exports
        .keys()
        .map(|key| found.name_world_key(key))
        .find_map(|name| name.strip_prefix(handler_prefix).map(str::to_owned));
    let version = match targeted {
        Some(version) => ContractVersion::parse(&version).ok_or_else(|| {
            ValidationError::UnsupportedContract {
                found: version,
                supported: ContractVersion::supported(),
            }
        })?,
        None => ContractVersion::CURRENT,
    };
    let contract = contracts
        .iter()
        .find(|c| c.version == version)
        .ok_or_else(|| ValidationError::Contract(format!("no contract {version}")))?;
    contract.check(&found, world)
}

/// Checks the binary's kind and validity and decodes its component type.
fn decode(bytes: &[u8]) -> Result<(Resolve, WorldId), ValidationError> {
    check_binary_kind(bytes)?;
    let mut validator = wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all());
    validator
        .validate_all(bytes)
        .map_err(|e| ValidationError::Malformed(e.to_string()))?;
    match wit_component::decode(bytes).map_err(|e| ValidationError::Malformed(format!("{e:#}")))? {
        wit_component::DecodedWasm::Component(resolve, world) => Ok((resolve, world)),
        wit_component::DecodedWasm::WitPackage(..) => Err(ValidationError::Malformed(
            "this is a WIT package, not an executable component".into(),
        )),
    }
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

    fn report(&self, contract: ContractVersion) -> ComponentReport {
        ComponentReport {
            contract,
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
mod tests;
