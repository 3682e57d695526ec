//! Drop-in files for fleets: `include = "conf.d/*.toml"` (or a list of such patterns) in the
//! main file adds the `[[credential]]` tables of every matching file, in name order — the
//! convention of systemd's and sudo's drop-in directories. A pattern is a directory (relative
//! to the main file's, or absolute) and a file name with at most one `*`; a directory that
//! is missing, or that others could write (and so add credentials), is an error, and so is
//! any other table in an included file. Errors name the file they are in.

use super::*;

/// `include` as written: one pattern or several.
#[derive(Debug, Default)]
pub(super) struct Patterns(pub(super) Vec<String>);

impl<'de> Deserialize<'de> for Patterns {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        match OneOrMany::deserialize(d) {
            Ok(OneOrMany::One(p)) => Ok(Patterns(vec![p])),
            Ok(OneOrMany::Many(v)) => Ok(Patterns(v)),
            Err(_) => Err(serde::de::Error::custom(
                "include is a file pattern such as \"conf.d/*.toml\", or a list of them",
            )),
        }
    }
}

/// An included file: credentials only.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Fragment {
    #[serde(default)]
    #[allow(clippy::vec_box)] // like `RawConfig::credential`
    pub(super) credential: Vec<Box<RawCredential>>,
}

/// Where each credential was written: the files' texts (for positions in errors; the main
/// file's borrowed, not copied) and, per credential, its file and its index there.
pub(super) struct Sources<'t> {
    files: Vec<(PathBuf, std::borrow::Cow<'t, str>)>,
    origins: Vec<(usize, usize)>,
}

impl<'t> Sources<'t> {
    pub(super) fn new(main: &Path, text: &'t str, credentials: usize) -> Sources<'t> {
        let mut s = Sources {
            files: Vec::new(),
            origins: Vec::with_capacity(credentials),
        };
        s.add(main, std::borrow::Cow::Borrowed(text), credentials);
        s
    }

    pub(super) fn add(&mut self, path: &Path, text: std::borrow::Cow<'t, str>, credentials: usize) {
        let f = self.files.len();
        self.files.push((path.to_path_buf(), text));
        self.origins
            .extend((0..credentials).map(|local| (f, local)));
    }

    /// The error of credential `n` (its file and `[[credential]]` line), or of the main
    /// file's other settings when `n` is `None`.
    pub(super) fn error(&self, n: Option<usize>, field: String, message: String) -> ConfigError {
        let (path, position) = match n {
            Some(i) => self.place_of(i),
            None => (self.main().0, None),
        };
        ConfigError::Invalid {
            path: path.to_path_buf(),
            position,
            field,
            message,
        }
    }

    /// The main file and its text.
    pub(super) fn main(&self) -> (&Path, &str) {
        let (p, t) = &self.files[0];
        (p, t)
    }

    /// The file credential `i` is written in, and its `[[credential]]` line there.
    pub(super) fn place_of(&self, i: usize) -> (&Path, Option<(usize, usize)>) {
        match self.origins.get(i) {
            Some(&(f, local)) => {
                let (p, t) = &self.files[f];
                (p, validate::credential_position(t, local))
            }
            None => (&self.files[0].0, None),
        }
    }

    /// `credential[<index in its file>]`, the field path prefix of credential `i`.
    pub(super) fn label(&self, i: usize) -> String {
        format!(
            "credential[{}]",
            self.origins.get(i).map_or(i, |&(_, local)| local)
        )
    }

    /// How credential `i` is named from another one's error: its label, and its file when
    /// that is not `from`'s.
    pub(super) fn reference(&self, i: usize, from: usize) -> String {
        let file = |n: usize| self.origins.get(n).map(|o| o.0);
        match file(i) {
            Some(f) if file(from) != Some(f) => {
                format!("{} of {}", self.label(i), self.files[f].0.display())
            }
            _ => self.label(i),
        }
    }

    /// How many credentials came from included files.
    pub(super) fn included(&self) -> usize {
        self.origins.iter().filter(|(f, _)| *f != 0).count()
    }
}

/// The files `pattern` names, sorted; `main` is the main configuration file.
pub(super) fn expand(main: &Path, pattern: &str) -> Result<Vec<PathBuf>, ConfigError> {
    let bad = |message: String| ConfigError::Invalid {
        path: main.to_path_buf(),
        position: None,
        field: "include".into(),
        message,
    };
    let written = Path::new(pattern);
    let (Some(dir), Some(name)) = (written.parent(), written.file_name()) else {
        return Err(bad(format!("{pattern:?} names no file")));
    };
    let name = name.to_string_lossy();
    let dir_text = dir.to_string_lossy();
    if dir_text.contains(['*', '?', '['])
        || name.contains(['?', '['])
        || name.matches('*').count() > 1
    {
        return Err(bad(format!(
            "{pattern:?}: only the file name may hold a wildcard, and one `*` at most (e.g. \"conf.d/*.toml\")"
        )));
    }
    let base = main.parent().unwrap_or(Path::new("."));
    let dir = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        base.join(dir)
    };
    let meta =
        std::fs::metadata(&dir).map_err(|e| bad(format!("{pattern:?}: {}: {e}", dir.display())))?;
    if !meta.is_dir() {
        return Err(bad(format!(
            "{pattern:?}: {} is not a directory",
            dir.display()
        )));
    }
    use std::os::unix::fs::PermissionsExt;
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(bad(format!(
            "{pattern:?}: {} is writable by group or others, who could add credentials to it (chmod go-w)",
            dir.display()
        )));
    }
    let (prefix, suffix) = match name.split_once('*') {
        Some((p, s)) => (p.to_string(), Some(s.to_string())),
        None => (name.to_string(), None),
    };
    let entries = std::fs::read_dir(&dir).map_err(|e| bad(format!("{}: {e}", dir.display())))?;
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(|e| bad(format!("{}: {e}", dir.display())))?;
        let file = e.file_name().to_string_lossy().to_string();
        let matches = match &suffix {
            // Hidden files (editors' swap files, `.#…`) are never drop-ins.
            Some(s) => {
                !file.starts_with('.')
                    && file.len() >= prefix.len() + s.len()
                    && file.starts_with(&prefix)
                    && file.ends_with(s.as_str())
            }
            None => file == prefix,
        };
        if matches {
            out.push(dir.join(&file));
        }
    }
    if suffix.is_none() && out.is_empty() {
        return Err(bad(format!(
            "{pattern:?}: {} does not exist",
            dir.join(&prefix).display()
        )));
    }
    out.sort();
    Ok(out)
}

/// Parses an included file (credentials only), errors naming it with line and column.
pub(super) fn parse_fragment(path: &Path, text: &str) -> Result<Fragment, ConfigError> {
    from_toml(text, path, 0, |field, message| {
        let top_level = !field.contains(['.', '[']);
        if top_level && message.contains("unknown field") {
            let message = format!(
                "{message}; an included file holds [[credential]] tables only (the rest belongs in the main file)"
            );
            (field, message)
        } else {
            (field, message)
        }
    })
}
