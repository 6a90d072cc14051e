//! The crate's modules import one way: no module reaches itself through the items it uses.
//!
//! A module depends on another when its code names an item defined there: through a `use`,
//! a path in its code, or a name it re-exports and also uses itself. Re-exports are followed
//! to where the item is defined, so `super::Shared` in a child counts as a use of the
//! sibling that defines `Shared`, not of `mod.rs`. A `mod` declaration and a re-export that
//! only names an item for others are not uses. Tests (`#[cfg(test)]`) are left out: they may
//! reach anywhere. Paths inside macro calls are not seen.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use syn::visit::Visit;

type ModPath = Vec<String>;

/// Where a name a module imports comes from.
enum Import {
    /// An absolute path inside the crate (`crate::` resolved).
    Crate(ModPath),
    /// Another crate.
    External,
}

#[derive(Default)]
struct Module {
    /// Names of items defined here.
    defined: BTreeSet<String>,
    /// Names imported by every `use` (public or not), by the name they are known by.
    imports: HashMap<String, Import>,
    /// Paths of private `use`s, and of re-exports whose name the module's own code uses.
    used_paths: Vec<ModPath>,
    /// Crate paths written in the module's code (`crate::`, `super::`, `self::` resolved).
    code_paths: Vec<ModPath>,
    /// Every identifier of the module's code outside `use` items.
    idents: BTreeSet<String>,
}

fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        attr.path().is_ident("cfg") && {
            let text = attr.meta.require_list().map(|l| l.tokens.to_string());
            text.is_ok_and(|t| t == "test")
        }
    })
}

/// Resolves the leading `crate`, `self` and `super`s of `segments`, written in `module`.
fn absolute(module: &ModPath, segments: &[String]) -> Option<ModPath> {
    let (first, rest) = segments.split_first()?;
    let mut base = match first.as_str() {
        "crate" => Vec::new(),
        "self" => module.clone(),
        "super" => module[..module.len().saturating_sub(1)].to_vec(),
        _ => return None,
    };
    let mut rest = rest;
    while rest.first().is_some_and(|s| s == "super") {
        base.pop();
        rest = &rest[1..];
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

/// Flattens a use tree into (name known by, path) pairs.
fn flatten(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<(String, Vec<String>)>) {
    match tree {
        syn::UseTree::Path(path) => {
            prefix.push(path.ident.to_string());
            flatten(&path.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(name) => {
            let ident = name.ident.to_string();
            if ident == "self" {
                out.push((prefix.last().cloned().unwrap_or_default(), prefix.clone()));
            } else {
                let mut path = prefix.clone();
                path.push(ident.clone());
                out.push((ident, path));
            }
        }
        syn::UseTree::Rename(rename) => {
            let mut path = prefix.clone();
            if rename.ident != "self" {
                path.push(rename.ident.to_string());
            }
            out.push((rename.rename.to_string(), path));
        }
        // A glob names no item; the module it reads from is used.
        syn::UseTree::Glob(_) => out.push((String::new(), prefix.clone())),
        syn::UseTree::Group(group) => {
            for tree in &group.items {
                flatten(tree, prefix, out);
            }
        }
    }
}

/// Collects a module's code paths and identifiers, skipping `use` items and test-only code.
struct CodeVisitor<'a> {
    module: &'a ModPath,
    paths: Vec<ModPath>,
    idents: BTreeSet<String>,
}

impl<'ast> Visit<'ast> for CodeVisitor<'_> {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        match item {
            syn::Item::Use(_) => {}
            syn::Item::Mod(m) if m.content.is_none() => {}
            syn::Item::Mod(m) if is_test_only(&m.attrs) => {}
            syn::Item::Fn(f) if is_test_only(&f.attrs) => {}
            syn::Item::Impl(i) if is_test_only(&i.attrs) => {}
            _ => syn::visit::visit_item(self, item),
        }
    }

    // `pub(super)` and `pub(crate)` name a module, but use nothing of it.
    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        if let Some(absolute) = absolute(self.module, &segments) {
            self.paths.push(absolute);
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_ident(&mut self, ident: &'ast syn::Ident) {
        self.idents.insert(ident.to_string());
    }
}

fn read_module(module: &ModPath, items: &[syn::Item], into: &mut Module) {
    let mut uses = Vec::new();
    for item in items {
        let name = match item {
            syn::Item::Const(i) => Some(&i.ident),
            syn::Item::Enum(i) => Some(&i.ident),
            syn::Item::Fn(i) => Some(&i.sig.ident),
            syn::Item::Macro(i) => i.ident.as_ref(),
            syn::Item::Static(i) => Some(&i.ident),
            syn::Item::Struct(i) => Some(&i.ident),
            syn::Item::Trait(i) => Some(&i.ident),
            syn::Item::Type(i) => Some(&i.ident),
            syn::Item::Union(i) => Some(&i.ident),
            syn::Item::Mod(i) if !is_test_only(&i.attrs) => Some(&i.ident),
            syn::Item::Use(u) if !is_test_only(&u.attrs) => {
                let public = !matches!(u.vis, syn::Visibility::Inherited);
                let mut flat = Vec::new();
                flatten(&u.tree, &mut Vec::new(), &mut flat);
                uses.extend(flat.into_iter().map(|(alias, path)| (public, alias, path)));
                None
            }
            _ => None,
        };
        if let Some(name) = name {
            into.defined.insert(name.to_string());
        }
    }
    let mut visitor = CodeVisitor {
        module,
        paths: Vec::new(),
        idents: BTreeSet::new(),
    };
    for item in items {
        visitor.visit_item(item);
    }
    for (public, alias, path) in uses {
        let import = match absolute(module, &path) {
            Some(absolute) => Import::Crate(absolute),
            // `use submodule::Item;` names a child module of this one.
            None if path
                .first()
                .is_some_and(|first| into.defined.contains(first)) =>
            {
                Import::Crate(module.iter().chain(&path).cloned().collect())
            }
            None => Import::External,
        };
        if let Import::Crate(absolute) = &import {
            if !public || alias.is_empty() || visitor.idents.contains(&alias) {
                into.used_paths.push(absolute.clone());
            }
        }
        if !alias.is_empty() {
            into.imports.insert(alias, import);
        }
    }
    into.code_paths = visitor.paths;
    into.idents = visitor.idents;
}

fn load(dir: &Path, module: ModPath, modules: &mut BTreeMap<ModPath, Module>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            let mut child = module.clone();
            child.push(path.file_name().unwrap().to_string_lossy().into_owned());
            load(&path, child, modules);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let mut name = module.clone();
        if stem != "mod" && stem != "lib" {
            name.push(stem);
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let file = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut parsed = Module::default();
        read_module(&name, &file.items, &mut parsed);
        modules.insert(name, parsed);
    }
}

/// The module that defines what `path` names, following imports and re-exports; `None` for
/// another crate's item.
fn defining(modules: &BTreeMap<ModPath, Module>, path: &[String], depth: usize) -> Option<ModPath> {
    if depth > 32 {
        return None;
    }
    for split in (0..=path.len()).rev() {
        let Some(module) = modules.get(&path[..split]) else {
            continue;
        };
        let Some(name) = path.get(split) else {
            return Some(path.to_vec());
        };
        if module.defined.contains(name) {
            return Some(path[..split].to_vec());
        }
        return match module.imports.get(name) {
            Some(Import::Crate(target)) => {
                let mut next = target.clone();
                next.extend(path[split + 1..].iter().cloned());
                defining(modules, &next, depth + 1)
            }
            Some(Import::External) => None,
            // An enum's variant, a glob's item: the module is what is known.
            None => Some(path[..split].to_vec()),
        };
    }
    None
}

fn show(module: &[String]) -> String {
    if module.is_empty() {
        "crate".to_owned()
    } else {
        module.join("::")
    }
}

/// Strongly connected components of more than one module (Tarjan's algorithm).
fn circles(edges: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<BTreeSet<ModPath>> {
    struct Walk<'a> {
        edges: &'a BTreeMap<ModPath, BTreeSet<ModPath>>,
        index: HashMap<&'a ModPath, usize>,
        low: HashMap<&'a ModPath, usize>,
        stack: Vec<&'a ModPath>,
        found: Vec<BTreeSet<ModPath>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, node: &'a ModPath) {
            let at = self.index.len();
            self.index.insert(node, at);
            self.low.insert(node, at);
            self.stack.push(node);
            for next in &self.edges[node] {
                if !self.index.contains_key(next) {
                    self.visit(next);
                    let low = self.low[node].min(self.low[next]);
                    self.low.insert(node, low);
                } else if self.stack.contains(&next) {
                    let low = self.low[node].min(self.index[next]);
                    self.low.insert(node, low);
                }
            }
            if self.low[node] == self.index[node] {
                let mut component = BTreeSet::new();
                while let Some(top) = self.stack.pop() {
                    component.insert(top.clone());
                    if top == node {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        edges,
        index: HashMap::new(),
        low: HashMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for node in edges.keys() {
        if !walk.index.contains_key(node) {
            walk.visit(node);
        }
    }
    walk.found
}

/// Every module's uses of other modules, with one path that shows each.
fn dependencies() -> BTreeMap<ModPath, BTreeMap<ModPath, String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules = BTreeMap::new();
    load(&src, Vec::new(), &mut modules);
    let mut uses = BTreeMap::new();
    for (name, module) in &modules {
        let mut targets = BTreeMap::new();
        for path in module.used_paths.iter().chain(&module.code_paths) {
            if let Some(target) = defining(&modules, path, 0) {
                if &target != name && modules.contains_key(&target) {
                    targets.entry(target).or_insert_with(|| path.join("::"));
                }
            }
        }
        uses.insert(name.clone(), targets);
    }
    uses
}

#[test]
fn no_module_reaches_itself_through_its_imports() {
    let uses = dependencies();
    let edges = uses
        .iter()
        .map(|(from, to)| (from.clone(), to.keys().cloned().collect()))
        .collect();
    let mut report = String::new();
    for circle in circles(&edges) {
        let names: Vec<String> = circle.iter().map(|m| show(m)).collect();
        report.push_str(&format!("\n{}:", names.join(", ")));
        for from in &circle {
            for (to, shown) in &uses[from] {
                if circle.contains(to) {
                    report.push_str(&format!("\n  {} -> {} ({shown})", show(from), show(to)));
                }
            }
        }
    }
    assert!(
        report.is_empty(),
        "modules that reach themselves (move what both use to a module of its own, or to \
         the one that uses it):{report}"
    );
}

/// The check itself finds a circle through a re-export, and none where a child only uses
/// what a sibling defines.
#[test]
fn a_circle_through_a_re_export_is_found() {
    let parse = |text: &str| syn::parse_file(text).unwrap().items;
    let mut modules = BTreeMap::new();
    for (name, text) in [
        (vec!["a"], "pub use self::b::Shared; pub mod b; pub mod c;"),
        (
            vec!["a", "b"],
            "pub struct Shared; fn f(_: super::c::Other) {}",
        ),
        (
            vec!["a", "c"],
            "use super::Shared; pub struct Other(Shared);",
        ),
        (vec!["d"], "use crate::a::Shared; fn g(_: Shared) {}"),
    ] {
        let name: ModPath = name.into_iter().map(String::from).collect();
        let mut module = Module::default();
        read_module(&name, &parse(text), &mut module);
        modules.insert(name, module);
    }
    let edges: BTreeMap<ModPath, BTreeSet<ModPath>> = modules
        .iter()
        .map(|(name, module)| {
            let targets = module
                .used_paths
                .iter()
                .chain(&module.code_paths)
                .filter_map(|p| defining(&modules, p, 0))
                .filter(|t| t != name)
                .collect();
            (name.clone(), targets)
        })
        .collect();
    let found: Vec<Vec<String>> = circles(&edges)
        .iter()
        .map(|c| c.iter().map(|m| show(m)).collect())
        .collect();
    assert_eq!(found, vec![vec!["a::b".to_owned(), "a::c".to_owned()]]);
}
