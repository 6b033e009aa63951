//! Code tables and postal-code shapes the request's rules use: ISO 3166-1 countries, US
//! states, Canadian provinces. A leaf: it imports nothing of the crate.

pub fn is_us_zip(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: &[u8]| r.iter().all(u8::is_ascii_digit);
    (b.len() == 5 && digits(b))
        || (b.len() == 10 && digits(&b[..5]) && b[5] == b'-' && digits(&b[6..]))
}

pub fn is_ca_postal(s: &str) -> bool {
    let compact: Vec<u8> = s
        .to_ascii_uppercase()
        .bytes()
        .filter(|c| *c != b' ')
        .collect();
    let spaces = s.bytes().filter(|c| *c == b' ').count();
    compact.len() == 6
        && spaces <= 1
        && compact.iter().enumerate().all(|(i, c)| {
            if i % 2 == 0 {
                c.is_ascii_alphabetic()
            } else {
                c.is_ascii_digit()
            }
        })
}

/// US states, DC, territories and military "states".
pub const US_STATES: [&str; 62] = [
    "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "FL", "GA", "HI", "ID", "IL", "IN", "IA", "KS",
    "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH", "NJ", "NM", "NY",
    "NC", "ND", "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN", "TX", "UT", "VT", "VA", "WA", "WV",
    "WI", "WY", "DC", "AS", "GU", "MP", "PR", "VI", "UM", "FM", "MH", "PW", "AA", "AE",
];

pub const CA_PROVINCES: [&str; 13] = [
    "AB", "BC", "MB", "NB", "NL", "NS", "NT", "NU", "ON", "PE", "QC", "SK", "YT",
];

/// ISO 3166-1 alpha-2 codes (officially assigned).
pub const ISO_3166_ALPHA2: [&str; 249] = [
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ",
    "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS",
    "BT", "BV", "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN",
    "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE",
    "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF",
    "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK", "HM",
    "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM",
    "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC",
    "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
    "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA",
    "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG",
    "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW",
    "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS",
    "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO",
    "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI",
    "VN", "VU", "WF", "WS", "YE", "YT", "ZA", "ZM", "ZW",
];

/// Where a country's addresses must name a region from a table and a postal code of a
/// fixed shape: the rules, and how the API words them.
pub struct RegionRules {
    pub regions: &'static [&'static str],
    pub postal_ok: fn(&str) -> bool,
    /// "must be …" for the region.
    pub region_rule: &'static str,
    /// "must be …" for the postal code.
    pub postal_rule: &'static str,
    /// The postal code's shape as the OpenAPI document states it (no looser than
    /// `postal_ok`).
    pub postal_pattern: &'static str,
    /// The schema's title for such an address.
    pub title: &'static str,
}

/// The countries with [`RegionRules`].
pub const COUNTRIES_WITH_REGION_RULES: [&str; 2] = ["US", "CA"];

/// The rules for US and Canadian addresses; elsewhere region and postal code are free text.
pub fn region_rules(country: &str) -> Option<RegionRules> {
    match country {
        "US" => Some(RegionRules {
            regions: &US_STATES,
            postal_ok: is_us_zip,
            region_rule: "a 2-letter US state code",
            postal_rule: "a US ZIP code (12345 or 12345-6789)",
            postal_pattern: r"^[0-9]{5}(-[0-9]{4})?$",
            title: "US address",
        }),
        "CA" => Some(RegionRules {
            regions: &CA_PROVINCES,
            postal_ok: is_ca_postal,
            region_rule: "a 2-letter Canadian province code",
            postal_rule: "a Canadian postal code (A1A 1A1)",
            postal_pattern: r"^[A-Za-z][0-9][A-Za-z] ?[0-9][A-Za-z][0-9]$",
            title: "Canadian address",
        }),
        _ => None,
    }
}
