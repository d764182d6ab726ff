//! Currencies as Stripe counts them: ISO 4217 codes (lowercase in the API)
//! and the minor unit amounts are given in.

use crate::input::Invalid;

/// ISO 4217 codes in circulation.
const ISO_4217: &str = "aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bhd bif bmd bnd \
    bob brl bsd btn bwp byn bzd cad cdf chf clp cny cop crc cup cve czk djf dkk dop dzd egp ern \
    etb eur fjd fkp gbp gel ghs gip gmd gnf gtq gyd hkd hnl htg huf idr ils inr iqd irr isk jmd \
    jod jpy kes kgs khr kmf kpw krw kwd kyd kzt lak lbp lkr lrd lsl lyd mad mdl mga mkd mmk mnt \
    mop mru mur mvr mwk mxn myr mzn nad ngn nio nok npr nzd omr pab pen pgk php pkr pln pyg qar \
    ron rsd rub rwf sar sbd scr sdg sek sgd shp sle sll sos srd ssp stn svc syp szl thb tjs tmt \
    tnd top try ttd twd tzs uah ugx usd uyu uzs ves vnd vuv wst xaf xcd xof xpf yer zar zmw zwl";

/// Currencies without a minor unit: Stripe's amounts in them are whole
/// units (¥1,500 is `1500`).
const ZERO_DECIMAL: &[&str] = &[
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
    "xaf", "xof", "xpf",
];
/// Currencies with three decimals (amounts in thousandths).
const THREE_DECIMAL: &[&str] = &["bhd", "jod", "kwd", "omr", "tnd"];

/// The largest amount Stripe takes in one payment (8 digits).
pub const MAX_AMOUNT: i64 = 99_999_999;

/// An amount in a currency's minor unit that Stripe takes, or why not.
pub fn check_amount(field: &str, amount: i64) -> Result<i64, Invalid> {
    if (1..=MAX_AMOUNT).contains(&amount) {
        Ok(amount)
    } else {
        Err(Invalid::new(
            field,
            format!(
                "{field} must be a whole number of the currency's smallest unit, 1 to {MAX_AMOUNT}"
            ),
        ))
    }
}

/// A currency code as Stripe wants it (`usd`), from any case.
pub fn parse(raw: &str) -> Option<String> {
    let code = raw.to_ascii_lowercase();
    (code.len() == 3 && ISO_4217.split_whitespace().any(|c| c == code)).then_some(code)
}

/// Digits after the decimal point in the currency's minor unit.
pub fn decimals(currency: &str) -> u32 {
    let code = currency.to_ascii_lowercase();
    if ZERO_DECIMAL.contains(&code.as_str()) {
        0
    } else if THREE_DECIMAL.contains(&code.as_str()) {
        3
    } else {
        2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_checked_and_lowercased() {
        assert_eq!(parse("USD").as_deref(), Some("usd"));
        assert_eq!(parse("jpy").as_deref(), Some("jpy"));
        for bad in ["", "us", "usdd", "xyz", "u$d"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert!(ZERO_DECIMAL
            .iter()
            .chain(THREE_DECIMAL)
            .all(|c| parse(c).is_some()));
    }
}
