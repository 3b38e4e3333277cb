//! Links in chat text: URLs with or without a scheme and bare domains,
//! found by `linkify` and kept only when their top-level domain is real
//! (the public suffix list, `psl`), after undoing the obfuscations
//! spammers use to get past link filters: `bit.ly\14gKvDo` (a backslash for
//! the slash), `adf.ly / KlD3Y` (spaces around the slash), `discord (dot)
//! gg`, `site [.] com`, `site . com`, full-width or one-dot-leader dots.
//!
//! Without the suffix check a scheme-less finder takes `e.g.`, `v1.2.3` or
//! `lol.exe` for links; with it, only names under a real suffix count. Real
//! suffixes are many and some are words (`.you`, `.name`, `.live`, `.me`,
//! `.in`): a bare name (no scheme, no `www.`, no path) counts only under a
//! suffix link spam uses ([`BARE_SUFFIXES`]), and a period followed by a
//! space (the end of a sentence) is closed up only before a suffix that is
//! no word ([`AFTER_PERIOD_SUFFIXES`]). In real chat "your boss.you
//! decide", "D.VA", "self.name", "give your best. live" and "GG. GG" are
//! prose with a space missing or a sentence ending, not links.

use std::sync::LazyLock;

use linkify::{LinkFinder, LinkKind};
use unicode_normalization::UnicodeNormalization;

static FINDER: LazyLock<LinkFinder> = LazyLock::new(|| {
    let mut f = LinkFinder::new();
    f.kinds(&[LinkKind::Url]);
    f.url_must_have_scheme(false);
    f
});

/// Suffixes after which spaces around a dot are closed up (`site . com`):
/// the common ones only, so `ok . so` stays two words.
const SPACED_SUFFIXES: [&str; 24] = [
    "com", "net", "org", "tv", "gg", "ly", "me", "tk", "io", "co", "xyz", "ru", "info", "link",
    "live", "site", "online", "shop", "app", "store", "club", "fun", "top", "ml",
];

/// Suffixes after which "x. suffix" (a period, then a space: how a
/// sentence ends) is closed up: none is a word people write after a
/// sentence.
const AFTER_PERIOD_SUFFIXES: [&str; 10] = [
    "com", "net", "org", "ly", "tk", "io", "xyz", "ru", "ml", "info",
];

/// Suffixes under which a bare name (no scheme, no `www.`, no path) is a
/// link: the generic and country suffixes link spam and link shorteners
/// use. Under any other a bare `word.word` is taken for prose.
const BARE_SUFFIXES: [&str; 40] = [
    "com", "net", "org", "info", "biz", "xyz", "top", "site", "online", "club", "shop", "store",
    "app", "io", "gg", "ly", "tk", "ml", "ga", "cf", "gq", "ru", "tv", "me", "co", "cc", "su",
    "pw", "ws", "vip", "win", "bid", "icu", "buzz", "link", "click", "live", "fun", "stream",
    "money",
];

/// A link found in a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The host, lower case (`clips.twitch.tv`).
    pub host: String,
    /// The registrable domain (`twitch.tv`), or the host when it has none.
    pub domain: String,
}

/// Whether `text` may hold a link at all, a cheap scan before [`find`]:
/// a dot or slash between two word characters (`site.com`, `bit.ly/x`), a
/// dot after a word and a space (`site .com`), a scheme, or the signs of an
/// obfuscation (`dot`, `[.]`, `(.)`, full-width or ideographic dots, one-dot
/// leaders). Ordinary sentences ("ok. so", "what...") pass it by.
fn may_hold_link(text: &str) -> bool {
    let b = text.as_bytes();
    // Only the bytes that can start a link or an obfuscated dot are looked
    // at (found with SIMD); most chat lines have none.
    let marks =
        memchr::memchr3_iter(b'.', b'/', b'\\', b).chain(memchr::memchr3_iter(b'[', b'(', b'{', b));
    for i in marks {
        if i == 0 || i + 1 >= b.len() {
            continue;
        }
        let (prev, c, next) = (b[i - 1], b[i], b[i + 1]);
        let word = |x: u8| x.is_ascii_alphanumeric() || x >= 0x80;
        match c {
            b'.' if next.is_ascii_alphanumeric() && (word(prev) || prev == b' ') => return true,
            b'.' if next == b' '
                && (word(prev) || prev == b' ')
                && b.get(i + 2).is_some_and(|x| x.is_ascii_alphabetic()) =>
            {
                // "site. com": only worth a closer look before a common suffix.
                let rest = &text[i + 2..];
                if SPACED_SUFFIXES.iter().any(|s| {
                    rest.len() >= s.len()
                        && rest.as_bytes()[..s.len()].eq_ignore_ascii_case(s.as_bytes())
                }) {
                    return true;
                }
            }
            b'/' if word(prev) && word(next) => return true,
            b'\\' if word(prev) && word(next) => return true,
            b'[' | b'(' | b'{' if b.get(i + 1) == Some(&b'.') => return true,
            _ => {}
        }
    }
    if !text.is_ascii() && text.contains(['\u{2024}', '\u{FF0E}', '\u{3002}', '\u{FE52}']) {
        return true;
    }
    // " dot ", "(dot)", "[dot]": one pass for "dot" and a look around it.
    memchr::memchr2_iter(b'd', b'D', b).any(|i| {
        i >= 1
            && b.get(i..i + 3)
                .is_some_and(|w| w.eq_ignore_ascii_case(b"dot"))
            && matches!(
                (b[i - 1], b.get(i + 3)),
                (b' ', Some(b' ')) | (b'(', Some(b')')) | (b'[', Some(b']')) | (b'{', Some(b'}'))
            )
    })
}

/// "x . com", "x .com", "x. com", "x dot com" before a common suffix, as
/// (pattern, replacement), built once.
static SPACED: LazyLock<Vec<(String, String)>> = LazyLock::new(|| {
    let mut v = Vec::new();
    for suffix in SPACED_SUFFIXES {
        for sep in [" . ", " .", " dot "] {
            v.push((format!("{sep}{suffix}"), format!(".{suffix}")));
        }
    }
    for suffix in AFTER_PERIOD_SUFFIXES {
        v.push((format!(". {suffix}"), format!(".{suffix}")));
    }
    v
});

/// Undoes the usual obfuscations; lower case.
fn deobfuscate(text: &str) -> String {
    let mut s: String = text.nfkc().flat_map(char::to_lowercase).collect();
    for (from, to) in [
        ("\u{3002}", "."),
        ("[.]", "."),
        ("(.)", "."),
        ("{.}", "."),
        ("[dot]", "."),
        ("(dot)", "."),
        ("{dot}", "."),
        ("\\", "/"),
    ] {
        if s.contains(from) {
            s = s.replace(from, to);
        }
    }
    if s.contains(" .") || s.contains(". ") || s.contains(" dot ") {
        for (pat, with) in SPACED.iter() {
            let mut from = 0;
            while let Some(i) = s[from..].find(pat.as_str()).map(|i| i + from) {
                let end = i + pat.len();
                let word_before = s[..i]
                    .chars()
                    .next_back()
                    .is_some_and(char::is_alphanumeric);
                let word_after = s[end..].chars().next().is_some_and(char::is_alphanumeric);
                if word_before && !word_after {
                    s.replace_range(i..end, with);
                    from = i + 1;
                } else {
                    from = end;
                }
            }
        }
    }
    // "adf.ly / KlD3Y": close up spaces around a slash after a domain.
    while let Some(i) = s.find(" / ") {
        s.replace_range(i..i + 3, "/");
    }
    s
}

/// The host part of a URL found by linkify (scheme, user info, port, path
/// cut off).
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let rest = rest.split(':').next().unwrap_or(rest);
    rest.trim_end_matches('.')
}

/// Links in `text` whose domain is under a known public suffix.
pub fn find(text: &str) -> Vec<Link> {
    if !may_hold_link(text) {
        return Vec::new();
    }
    let clean = deobfuscate(text);
    let mut out: Vec<Link> = Vec::new();
    for l in FINDER.links(&clean) {
        let url = l.as_str();
        let host = host_of(url);
        if host.is_empty() || !host.contains('.') {
            continue;
        }
        let bare = !url.contains("://")
            && !host.starts_with("www.")
            && url.trim_end_matches(['.', '/']).len() <= host.len();
        if bare
            && !host
                .rsplit('.')
                .next()
                .is_some_and(|tld| BARE_SUFFIXES.contains(&tld))
        {
            continue;
        }
        let Some(suffix) = psl::suffix(host.as_bytes()) else {
            continue;
        };
        // The host must have a name under the suffix ("com" alone is not
        // a link) and the suffix must be on the list (not `lol.exe`).
        if !suffix.is_known() || suffix.as_bytes().len() >= host.len() {
            continue;
        }
        let domain = psl::domain_str(host).unwrap_or(host).to_owned();
        if !out.iter().any(|x| x.host == host) {
            out.push(Link {
                host: host.to_owned(),
                domain,
            });
        }
    }
    out
}

/// Whether `host` is `domain` or one of its subdomains.
pub fn host_is_under(host: &str, domain: &str) -> bool {
    let domain = domain.trim().trim_start_matches('.').to_ascii_lowercase();
    host == domain
        || host
            .strip_suffix(domain.as_str())
            .is_some_and(|rest| rest.ends_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domains(text: &str) -> Vec<String> {
        find(text).into_iter().map(|l| l.domain).collect()
    }

    #[test]
    fn plain_and_bare_links() {
        assert_eq!(
            domains("go to https://www.twitch.tv/fabiel643 now"),
            ["twitch.tv"]
        );
        assert_eq!(domains("oldchat.tk best chat"), ["oldchat.tk"]);
        assert_eq!(domains("9nl.me/make-money-online fast"), ["9nl.me"]);
        let l = find("therglove.blogspot.in/2014/01/x.html");
        assert_eq!(l[0].host, "therglove.blogspot.in");
        assert_eq!(domains("xnxx.com"), ["xnxx.com"]);
        // Under a suffix that is a word, with a scheme, `www.` or a path.
        assert_eq!(domains("https://boss.you"), ["boss.you"]);
        assert_eq!(domains("www.site.in"), ["site.in"]);
        assert_eq!(domains("site.in/free"), ["site.in"]);
        assert_eq!(domains("free skins. com"), ["skins.com"]);
    }

    #[test]
    fn obfuscated_links() {
        // The obfuscations the real spam used.
        assert_eq!(domains("adf.ly / KlD3Y"), ["adf.ly"]);
        assert_eq!(domains("bit.ly\\14gKvDo"), ["bit.ly"]);
        assert_eq!(domains("join discord (dot) gg/abc"), ["discord.gg"]);
        assert_eq!(domains("visit scam [.] com"), ["scam.com"]);
        assert_eq!(domains("visit scam . com today"), ["scam.com"]);
        assert_eq!(domains("ｆｒｅｅ．ｃｏｍ"), ["free.com"]);
        assert_eq!(domains("bit\u{2024}ly/x"), ["bit.ly"]);
    }

    #[test]
    fn things_that_are_not_links() {
        for t in [
            "e.g. this",
            "v1.2.3",
            "lol.exe",
            "ok . so what",
            "wait...what",
            "3.5 stars",
            "Mr.Bean",
            "hi",
            "a/b test",
            "com",
            // A space missing after a period, or a sentence ending before
            // a word that is also a suffix.
            "not your boss.you decide",
            "D.VA main",
            "self.name = name",
            "FIRE.FIRE",
            "give your best. live free",
            "first place. me second",
            "nice one. GG",
            "BE JAKE.BE LIKE JAKE",
        ] {
            assert!(domains(t).is_empty(), "{t}: {:?}", find(t));
        }
    }

    #[test]
    fn subdomains_fall_under_their_domain() {
        assert!(host_is_under("clips.twitch.tv", "twitch.tv"));
        assert!(host_is_under("twitch.tv", "twitch.tv"));
        assert!(!host_is_under("nottwitch.tv", "twitch.tv"));
    }
}
