//! Distinguished names as certrot's configuration writes them (RFC 4514) and as it requests
//! them: pure, shared by the configuration's validation and the `csr` issuer.

use rcgen::{DistinguishedName, DnType};

/// Parses an RFC 4514 distinguished name (`CN=orders,OU=apps,O=ACME,C=DE`; attribute types
/// CN, OU, O, L, ST, C, STREET, DC, UID, SERIALNUMBER or dotted OIDs; `\,`-style and `\XX`
/// hex escapes; multi-valued RDNs with `+` are refused). RFC 4514 lists the most specific
/// RDN first, so the DER order is the reverse; the same string always gives the same DER.
pub fn parse_dn(text: &str) -> Result<DistinguishedName, String> {
    let mut rdns: Vec<(DnType, String)> = Vec::new();
    let mut chars = text.trim().chars().peekable();
    loop {
        let mut ty = String::new();
        for c in chars.by_ref() {
            if c == '=' {
                break;
            }
            ty.push(c);
        }
        let ty = ty.trim().to_string();
        if ty.is_empty() {
            return Err(format!("{text:?}: expected TYPE=value"));
        }
        let mut value = String::new();
        let mut escaped_tail = false;
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    let a = chars
                        .next()
                        .ok_or_else(|| format!("{text:?}: dangling '\\'"))?;
                    if a.is_ascii_hexdigit() {
                        let b = chars
                            .next()
                            .filter(char::is_ascii_hexdigit)
                            .ok_or_else(|| format!("{text:?}: bad hex escape"))?;
                        let byte = u8::from_str_radix(&format!("{a}{b}"), 16)
                            .map_err(|_| format!("{text:?}: bad hex escape"))?;
                        if !byte.is_ascii() {
                            return Err(format!(
                                "{text:?}: write non-ASCII characters directly, not as hex escapes"
                            ));
                        }
                        value.push(byte as char);
                    } else {
                        value.push(a);
                    }
                    escaped_tail = true;
                }
                ',' => break,
                '+' => {
                    return Err(format!(
                        "{text:?}: multi-valued RDNs ('+') are not supported"
                    ));
                }
                c => {
                    value.push(c);
                    escaped_tail = false;
                }
            }
        }
        let value = if escaped_tail {
            value.trim_start().to_string()
        } else {
            value.trim().to_string()
        };
        if value.is_empty() {
            return Err(format!("{text:?}: {ty} has an empty value"));
        }
        let dn_type = match ty.to_ascii_uppercase().as_str() {
            "CN" => DnType::CommonName,
            "OU" => DnType::OrganizationalUnitName,
            "O" => DnType::OrganizationName,
            "L" => DnType::LocalityName,
            "ST" => DnType::StateOrProvinceName,
            "C" => DnType::CountryName,
            "STREET" => DnType::CustomDnType(vec![2, 5, 4, 9]),
            "SERIALNUMBER" => DnType::CustomDnType(vec![2, 5, 4, 5]),
            "DC" => DnType::CustomDnType(vec![0, 9, 2342, 19200300, 100, 1, 25]),
            "UID" => DnType::CustomDnType(vec![0, 9, 2342, 19200300, 100, 1, 1]),
            t if t.contains('.') => DnType::CustomDnType(
                t.split('.')
                    .map(|p| p.parse::<u64>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| format!("{text:?}: {ty} is not an OID"))?,
            ),
            _ => return Err(format!("{text:?}: unknown attribute type {ty:?}")),
        };
        if dn_type == DnType::CountryName && value.len() != 2 {
            return Err(format!("{text:?}: C must be a two-letter country code"));
        }
        rdns.push((dn_type, value));
        if chars.peek().is_none() {
            break;
        }
    }
    let mut dn = DistinguishedName::new();
    for (t, v) in rdns.into_iter().rev() {
        dn.push(t, v);
    }
    Ok(dn)
}

/// The subject certrot requests: `CN=<common_name>` plus `O=<organization>` when given.
pub fn subject(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    if let Some(o) = organization {
        dn.push(DnType::OrganizationName, o);
    }
    dn.push(DnType::CommonName, common_name);
    dn
}
