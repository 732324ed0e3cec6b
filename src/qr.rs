//! QR codes of links: for the terminal (Unicode half blocks, two rows a line) and SVG.

use anyhow::{Result, anyhow};
use qrcode::render::{svg, unicode};
use qrcode::{EcLevel, QrCode};

fn code(text: &str) -> Result<QrCode> {
    // M recovers 15% damage: enough for a screen, and keeps the code small.
    QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)
        .map_err(|e| anyhow!("cannot encode {text:?} as a QR code: {e}"))
}

/// The QR code as lines of `▀▄█ ` for a terminal, dark modules drawn light-on-dark
/// inverted so phones read it on dark and light terminal themes alike.
pub fn terminal(text: &str) -> Result<String> {
    Ok(code(text)?
        .render::<unicode::Dense1x2>()
        .dark_color(unicode::Dense1x2::Light)
        .light_color(unicode::Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

/// The QR code as an SVG document.
pub fn svg(text: &str) -> Result<String> {
    Ok(code(text)?
        .render::<svg::Color<'_>>()
        .min_dimensions(256, 256)
        .dark_color(svg::Color("#000000"))
        .light_color(svg::Color("#ffffff"))
        .quiet_zone(true)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_both_ways() {
        let t = terminal("http://192.0.2.1:8443/join?room=x").unwrap();
        assert!(t.lines().count() > 10);
        assert!(t.contains('█') || t.contains('▀') || t.contains('▄'));
        let s = svg("http://192.0.2.1:8443/join?room=x").unwrap();
        assert!(s.starts_with("<?xml") && s.contains("<svg"));
    }
}
