//! Every parser that takes outside input (`certrot::inputs::ALL`: PEM chains and keys,
//! service keys, configuration, state files, token responses and their JWT payloads,
//! Service Manager answers and `Retry-After` values, servicebinding `.metadata`, Kubernetes
//! state annotations), fed random bytes and valid inputs with bytes flipped, cut and
//! doubled: each answers with a value or an error, never a panic.
//!
//! 256 cases per input kind by default; `PROPTEST_CASES=20000 cargo test --release --test
//! parsers_never_panic` for a longer run. Coverage-guided fuzzing of the same entries:
//! `scripts/fuzz.sh` (docs/reliability.md).

#[allow(dead_code)]
#[path = "common/seeds.rs"]
mod seeds;
use proptest::prelude::*;

/// A valid input with some bytes flipped, some cut, some repeated.
fn mutated(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = seed.len().max(1);
    (
        proptest::collection::vec((0..len, any::<u8>()), 0..8),
        0..=len,
        any::<bool>(),
    )
        .prop_map(move |(flips, cut, dup)| {
            let mut v = seed.clone();
            for (i, b) in flips {
                if i < v.len() {
                    v[i] = b;
                }
            }
            v.truncate(cut.max(1));
            if dup {
                let again = v.clone();
                v.extend(again);
            }
            v
        })
}

/// Random bytes, or one of the input kind's seeds mutated.
fn inputs_of(name: &str) -> impl Strategy<Value = Vec<u8>> {
    let seeds = seeds::for_input(name);
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..2048),
        proptest::sample::select(seeds).prop_flat_map(mutated)
    ]
}

/// The entry of `certrot::inputs` named `name`.
fn entry(name: &str) -> certrot::inputs::Entry {
    certrot::inputs::ALL
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
        .unwrap_or_else(|| panic!("no input {name}"))
}

macro_rules! never_panics {
    ($($name:ident),* $(,)?) => {
        proptest! {
            $(
                #[test]
                fn $name(input in inputs_of(stringify!($name))) {
                    entry(stringify!($name))(&input);
                }
            )*
        }

        /// Every entry of `certrot::inputs::ALL` has a test here.
        #[test]
        fn every_input_kind_is_covered() {
            let tested = [$(stringify!($name)),*];
            for (name, _) in certrot::inputs::ALL {
                assert!(tested.contains(&name), "{name} has no property test");
            }
        }
    };
}

never_panics!(
    pem_chain_and_key,
    service_key,
    configuration,
    state_file,
    token_response,
    service_manager_answer,
    servicebinding_metadata,
    kubernetes_annotations,
);

/// The seeds themselves are valid: each parses (so the mutations start from real inputs).
#[test]
fn seeds_are_accepted_by_their_parsers() {
    let one = |name: &str| seeds::for_input(name).remove(0);
    let (cert_key, cert) = {
        let s = seeds::for_input("pem_chain_and_key");
        (s[0].clone(), s[1].clone())
    };
    assert!(certrot::x509::parse_chain(&cert, "seed").is_ok());
    assert!(certrot::x509::parse_key(&cert_key, "seed").is_ok());
    assert!(
        certrot::servicekey::parse_service_key(&one("service_key"), "seed", &Default::default())
            .is_ok()
    );
    let config = String::from_utf8(one("configuration")).unwrap();
    certrot::config::Config::parse(&config, std::path::Path::new("seed.toml")).unwrap();
    serde_json::from_slice::<certrot::state::State>(&one("state_file")).unwrap();
    let sm = seeds::for_input("service_manager_answer");
    assert_eq!(
        certrot::issuer::service_manager::broker_status(&sm[0]),
        Some(409)
    );
    let (page, next) = certrot::issuer::service_manager::parse_list_page(&sm[1], "seed").unwrap();
    assert_eq!((page.len(), next.as_deref()), (1, Some("b1")));
    let ann: std::collections::BTreeMap<String, String> =
        String::from_utf8(one("kubernetes_annotations"))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    let st = certrot::store::kubernetes::parse_state(Some(&ann), "orders").unwrap();
    assert_eq!(st.retiring.len(), 1);
}
