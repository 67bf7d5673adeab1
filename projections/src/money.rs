//! Amounts in minor units shown as people read them: 12900 CNY is
//! "129.00 CNY", 12900 JPY is "12900 JPY", 12900 BHD is "12.900 BHD".
//!
//! Hand-written rather than taken from a currency crate: all it needs is
//! the few ISO 4217 currencies whose minor unit is not a hundredth, a list
//! that changes once in years, and a crate would bring a table of every
//! currency with names, numbers and countries (and a build script) for it.

/// Digits after the decimal point in `currency`'s minor unit (ISO 4217,
/// list one, as of amendment 178); 2 for every code not listed, unknown
/// ones included.
pub fn minor_unit_digits(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        "CLF" | "UYW" => 4,
        _ => 2,
    }
}

/// `minor` units of `currency` as a decimal amount followed by the code.
pub fn format_minor(minor: i64, currency: &str) -> String {
    let digits = minor_unit_digits(currency);
    if digits == 0 {
        return format!("{minor} {currency}");
    }
    let unit = 10_i64.pow(digits);
    let sign = if minor < 0 { "-" } else { "" };
    let magnitude = minor.unsigned_abs();
    let unit = unit as u64;
    format!(
        "{sign}{}.{:0width$} {currency}",
        magnitude / unit,
        magnitude % unit,
        width = digits as usize
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_currency_keeps_its_own_minor_unit() {
        assert_eq!(format_minor(12_900, "CNY"), "129.00 CNY");
        assert_eq!(format_minor(12_900, "JPY"), "12900 JPY");
        assert_eq!(format_minor(12_900, "BHD"), "12.900 BHD");
        assert_eq!(format_minor(5, "KWD"), "0.005 KWD");
        assert_eq!(format_minor(7, "USD"), "0.07 USD");
        assert_eq!(format_minor(0, "EUR"), "0.00 EUR");
        assert_eq!(format_minor(123_456, "CLF"), "12.3456 CLF");
    }

    #[test]
    fn negative_amounts_keep_their_sign_below_one_unit() {
        assert_eq!(format_minor(-5, "USD"), "-0.05 USD");
        assert_eq!(format_minor(-1_050, "EUR"), "-10.50 EUR");
        assert_eq!(format_minor(-3, "JPY"), "-3 JPY");
        assert_eq!(format_minor(i64::MIN, "USD"), "-92233720368547758.08 USD");
    }
}
