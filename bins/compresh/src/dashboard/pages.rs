//! The pages, rendered as strings. Every interpolated value goes through [`esc`] (numbers and
//! our own constants included, so there is no exception to remember).

use std::collections::BTreeMap;
use std::fmt::Write;

use compresh_store::{ApiKeyRecord, DailyUsage, ProviderRecord};

use super::html::{esc, number, when};

/// What the header of a logged-in page shows.
pub struct Chrome<'a> {
    /// The user's email.
    pub email: &'a str,
    /// The account name.
    pub account: &'a str,
    /// The session's CSRF token (for the logout form).
    pub csrf: &'a str,
    /// Path of the active tab.
    pub active: &'static str,
}

/// A message shown above a page's content.
pub enum Notice<'a> {
    /// Nothing.
    None,
    /// Success.
    Ok(&'a str),
    /// Failure; the text is safe to show.
    Error(&'a str),
    /// A new key, shown once.
    NewKey {
        /// What happened ("created", "rotated").
        what: &'a str,
        /// The secret.
        secret: &'a str,
    },
}

const NAV: &[(&str, &str)] = &[
    ("/dashboard/settings/api-keys", "API Keys"),
    ("/dashboard/settings/provider-keys", "Provider Keys"),
    ("/dashboard/usage", "Usage"),
];

/// The HTML document around a page body.
pub fn layout(title: &str, chrome: Option<&Chrome<'_>>, body: &str) -> String {
    let mut head = String::new();
    if let Some(chrome) = chrome {
        let mut nav = String::new();
        for (path, label) in NAV {
            let class = if *path == chrome.active {
                " class=\"active\""
            } else {
                ""
            };
            let _ = write!(nav, "<a href=\"{}\"{class}>{}</a>", esc(path), esc(label));
        }
        let _ = write!(
            head,
            "<header><span class=\"brand\">Compresh</span><nav>{nav}</nav>\
             <span class=\"who\">{} · {}</span>\
             <form method=\"post\" action=\"/dashboard/logout\">{}\
             <button class=\"link\" type=\"submit\">Log out</button></form></header>",
            esc(chrome.email),
            esc(chrome.account),
            csrf_field(chrome.csrf)
        );
    } else {
        head.push_str("<header><span class=\"brand\">Compresh</span></header>");
    }
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Compresh</title>\
         <link rel=\"icon\" href=\"data:,\">\
         <link rel=\"stylesheet\" href=\"/dashboard/assets/style.css\">\
         <script src=\"/dashboard/assets/copy.js\" defer></script></head>\
         <body>{head}<main>{body}</main></body></html>",
        esc(title)
    )
}

fn csrf_field(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(csrf)
    )
}

fn notice(notice: &Notice<'_>) -> String {
    match notice {
        Notice::None => String::new(),
        Notice::Ok(text) => format!("<div class=\"notice ok\" role=\"status\">{}</div>", esc(text)),
        Notice::Error(text) => {
            format!("<div class=\"notice error\" role=\"alert\">{}</div>", esc(text))
        }
        Notice::NewKey { what, secret } => format!(
            "<div class=\"notice warn\" role=\"status\"><strong>Key {}. Copy it now: you won't \
             see this again.</strong> Only a hint of it is stored.\
             <div class=\"secret\"><code id=\"new-key\">{}</code>\
             <button type=\"button\" class=\"secondary\" data-copy=\"new-key\">Copy</button></div></div>",
            esc(what),
            esc(secret)
        ),
    }
}

/// The login form.
pub fn login(csrf: &str, email: &str, error: Option<&str>, signup_open: bool) -> String {
    let signup = if signup_open {
        "<p class=\"muted\">No account yet? <a href=\"/dashboard/signup\">Sign up</a>.</p>"
    } else {
        "<p class=\"muted\">Accounts are created by the operator (<code>compresh users create</code>).</p>"
    };
    let body = format!(
        "<div class=\"card narrow\"><h1>Log in</h1>{}\
         <form method=\"post\" action=\"/dashboard/login\">{}\
         <label for=\"email\">Email</label><input type=\"email\" id=\"email\" name=\"email\" value=\"{}\" required autocomplete=\"username\">\
         <label for=\"password\">Password</label><input type=\"password\" id=\"password\" name=\"password\" required autocomplete=\"current-password\">\
         <p><button type=\"submit\">Log in</button></p></form>{signup}</div>",
        error.map(|e| notice(&Notice::Error(e))).unwrap_or_default(),
        csrf_field(csrf),
        esc(email)
    );
    layout("Log in", None, &body)
}

/// The sign-up form.
pub fn signup(csrf: &str, email: &str, error: Option<&str>) -> String {
    let body = format!(
        "<div class=\"card narrow\"><h1>Sign up</h1>{}\
         <form method=\"post\" action=\"/dashboard/signup\">{}\
         <label for=\"email\">Email</label><input type=\"email\" id=\"email\" name=\"email\" value=\"{}\" required autocomplete=\"username\">\
         <label for=\"password\">Password (at least {} characters)</label>\
         <input type=\"password\" id=\"password\" name=\"password\" required minlength=\"{}\" autocomplete=\"new-password\">\
         <p><button type=\"submit\">Create account</button></p></form>\
         <p class=\"muted\">Already signed up? <a href=\"/dashboard/login\">Log in</a>.</p></div>",
        error.map(|e| notice(&Notice::Error(e))).unwrap_or_default(),
        csrf_field(csrf),
        esc(email),
        esc(&super::password::MIN_PASSWORD_LEN.to_string()),
        esc(&super::password::MIN_PASSWORD_LEN.to_string()),
    );
    layout("Sign up", None, &body)
}

/// A page with just a title and a sentence (errors, refusals).
pub fn message(title: &str, text: &str, chrome: Option<&Chrome<'_>>) -> String {
    let body = format!(
        "<div class=\"card narrow\"><h1>{}</h1><p>{}</p><p><a href=\"/dashboard\">Back to the dashboard</a></p></div>",
        esc(title),
        esc(text)
    );
    layout(title, chrome, &body)
}

/// Grace periods offered when rotating: (form value, label).
pub const GRACE_CHOICES: &[(&str, &str)] = &[
    ("0", "none (old key stops now)"),
    ("3600", "1 hour"),
    ("86400", "24 hours"),
    ("604800", "7 days"),
];

/// Environment tags a key can carry.
pub const ENVIRONMENTS: &[&str] = &["dev", "staging", "prod"];

/// Settings → API Keys.
pub fn api_keys(chrome: &Chrome<'_>, keys: &[ApiKeyRecord], now: i64, note: &Notice<'_>) -> String {
    let csrf = csrf_field(chrome.csrf);
    let mut rows = String::new();
    for key in keys.iter().rev() {
        let status = crate::ops::key_status(key, now);
        let actions = if key.revoked_at.is_none() && key.is_usable_at(now) {
            let mut grace = String::new();
            for (value, label) in GRACE_CHOICES {
                let selected = if *value == "86400" { " selected" } else { "" };
                let _ = write!(
                    grace,
                    "<option value=\"{}\"{selected}>{}</option>",
                    esc(value),
                    esc(label)
                );
            }
            format!(
                "<form method=\"post\" action=\"/dashboard/settings/api-keys/rotate\">{csrf}\
                 <input type=\"hidden\" name=\"key_id\" value=\"{id}\">\
                 <select name=\"grace\" aria-label=\"Grace period\">{grace}</select> \
                 <button type=\"submit\" class=\"secondary\">Rotate</button></form>\
                 <form method=\"post\" action=\"/dashboard/settings/api-keys/revoke\">{csrf}\
                 <input type=\"hidden\" name=\"key_id\" value=\"{id}\">\
                 <button type=\"submit\" class=\"danger\">Revoke…</button></form>",
                id = esc(key.id.as_str())
            )
        } else {
            String::new()
        };
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td>\
             <td><span class=\"badge b-{}\">{}</span></td><td>{actions}</td></tr>",
            esc(&key.name),
            key.environment
                .as_deref()
                .map(|env| format!("<span class=\"badge env\">{}</span>", esc(env)))
                .unwrap_or_default(),
            esc(&key.hint),
            esc(&when(key.created_at)),
            esc(&key.last_used_at.map_or_else(|| "never".to_owned(), when)),
            esc(status),
            esc(status),
        );
    }
    if keys.is_empty() {
        rows.push_str("<tr><td colspan=\"7\" class=\"muted\">No keys yet.</td></tr>");
    }
    let mut envs = String::new();
    for env in ENVIRONMENTS {
        let _ = write!(envs, "<option value=\"{}\">{}</option>", esc(env), esc(env));
    }
    let body = format!(
        "<h1>API Keys</h1>{}\
         <div class=\"card\"><h2 class=\"first\">Create a key</h2>\
         <form method=\"post\" action=\"/dashboard/settings/api-keys\" class=\"row\">{csrf}\
         <div><label for=\"name\">Name</label><input type=\"text\" id=\"name\" name=\"name\" required maxlength=\"100\"></div>\
         <div><label for=\"environment\">Environment</label><select id=\"environment\" name=\"environment\">{envs}</select></div>\
         <div class=\"fit\"><button type=\"submit\">Create key</button></div></form></div>\
         <table><thead><tr><th>Name</th><th>Environment</th><th>Key</th><th>Created</th>\
         <th>Last used</th><th>Status</th><th></th></tr></thead><tbody>{rows}</tbody></table>",
        notice(note)
    );
    layout("API Keys", Some(chrome), &body)
}

/// The confirmation step of a revocation.
pub fn confirm_revoke(chrome: &Chrome<'_>, key: &ApiKeyRecord) -> String {
    let body = format!(
        "<div class=\"card narrow\"><h1>Revoke key?</h1>\
         <p>Key <strong>{}</strong> (<code>{}</code>) will stop working immediately. This cannot be undone.</p>\
         <form method=\"post\" action=\"/dashboard/settings/api-keys/revoke\">{}\
         <input type=\"hidden\" name=\"key_id\" value=\"{}\">\
         <label><input type=\"checkbox\" name=\"confirm\" value=\"yes\" required> I understand, revoke this key</label>\
         <p><button type=\"submit\" class=\"danger\">Revoke key</button> \
         <a href=\"/dashboard/settings/api-keys\">Cancel</a></p></form></div>",
        esc(&key.name),
        esc(&key.hint),
        csrf_field(chrome.csrf),
        esc(key.id.as_str())
    );
    layout("Revoke key", Some(chrome), &body)
}

/// Provider kinds offered: (kind, label).
pub const PROVIDER_KINDS: &[(&str, &str)] = &[
    ("openai", "OpenAI"),
    ("anthropic", "Anthropic"),
    ("openai-compatible", "OpenAI-compatible server"),
];

/// Settings → Provider Keys.
pub fn provider_keys(
    chrome: &Chrome<'_>,
    providers: &[ProviderRecord],
    note: &Notice<'_>,
) -> String {
    let csrf = csrf_field(chrome.csrf);
    let mut rows = String::new();
    for provider in providers {
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td>\
             <td><form method=\"post\" action=\"/dashboard/settings/provider-keys/remove\">{csrf}\
             <input type=\"hidden\" name=\"name\" value=\"{}\">\
             <button type=\"submit\" class=\"secondary\">Remove</button></form></td></tr>",
            esc(&provider.name),
            esc(&provider.kind),
            esc(if provider.hint.is_empty() {
                "(no key)"
            } else {
                &provider.hint
            }),
            esc(provider.base_url.as_deref().unwrap_or("default")),
            esc(&when(provider.updated_at)),
            esc(&provider.name),
        );
    }
    if providers.is_empty() {
        rows.push_str("<tr><td colspan=\"6\" class=\"muted\">No provider keys yet.</td></tr>");
    }
    let mut kinds = String::new();
    for (kind, label) in PROVIDER_KINDS {
        let _ = write!(
            kinds,
            "<option value=\"{}\">{}</option>",
            esc(kind),
            esc(label)
        );
    }
    let body = format!(
        "<h1>Provider Keys</h1>{}\
         <p class=\"muted\">Keys are encrypted at rest; after saving, only a hint is ever shown. \
         Changes apply to the next request.</p>\
         <table><thead><tr><th>Name</th><th>Kind</th><th>Key</th><th>Base URL</th><th>Updated</th><th></th></tr></thead>\
         <tbody>{rows}</tbody></table>\
         <div class=\"card spaced\"><h2 class=\"first\">Set or replace a provider key</h2>\
         <form method=\"post\" action=\"/dashboard/settings/provider-keys\">{csrf}\
         <div class=\"row\"><div><label for=\"kind\">Provider</label><select id=\"kind\" name=\"kind\">{kinds}</select></div>\
         <div><label for=\"pname\">Name (OpenAI-compatible only)</label><input type=\"text\" id=\"pname\" name=\"name\" placeholder=\"e.g. local\"></div></div>\
         <label for=\"base_url\">Base URL (optional for OpenAI/Anthropic, required for OpenAI-compatible)</label>\
         <input type=\"url\" id=\"base_url\" name=\"base_url\" placeholder=\"https://api.example.com/v1\">\
         <label for=\"secret\">API key</label><input type=\"password\" id=\"secret\" name=\"secret\" autocomplete=\"off\">\
         <p><button type=\"submit\">Save provider key</button></p></form></div>",
        notice(note)
    );
    layout("Provider Keys", Some(chrome), &body)
}

/// One key's line in the usage page's limits table.
pub struct KeyLimit<'a> {
    /// The key.
    pub key: &'a ApiKeyRecord,
    /// Requests per minute it gets.
    pub rpm: u32,
    /// Whether that is the key's own override.
    pub own: bool,
}

/// Usage: a chart of requests per day, the daily table per key, the plan and the limits.
pub fn usage(
    chrome: &Chrome<'_>,
    plan: &str,
    plan_rpm: u32,
    limits: &[KeyLimit<'_>],
    retired: &[KeyLimit<'_>],
    days: &[String],
    rows: &[DailyUsage],
) -> String {
    let names: BTreeMap<&str, &str> = limits
        .iter()
        .chain(retired)
        .map(|l| (l.key.id.as_str(), l.key.name.as_str()))
        .collect();
    let mut table = String::new();
    for row in rows.iter().rev() {
        let name = names
            .get(row.key_id.as_str())
            .copied()
            .unwrap_or("(deleted key)");
        let _ = write!(
            table,
            "<tr><td>{}</td><td>{} <span class=\"muted mono\">{}</span></td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(&row.day),
            esc(name),
            esc(row.key_id.as_str()),
            esc(&number(row.requests)),
            esc(&number(row.input_tokens)),
            esc(&number(row.output_tokens)),
            esc(&number(row.rate_limited)),
            esc(&number(row.errors)),
        );
    }
    if rows.is_empty() {
        table.push_str(
            "<tr><td colspan=\"7\" class=\"muted\">No requests in this period.</td></tr>",
        );
    }
    let mut limit_rows = String::new();
    for limit in limits {
        let _ = write!(
            limit_rows,
            "<tr><td>{}</td><td><code>{}</code></td><td class=\"num\">{}</td><td>{}</td></tr>",
            esc(&limit.key.name),
            esc(&limit.key.hint),
            esc(&number(u64::from(limit.rpm))),
            esc(if limit.own {
                "key override"
            } else {
                "plan default"
            }),
        );
    }
    let body = format!(
        "<h1>Usage</h1>\
         <div class=\"card\"><strong>Plan:</strong> {} · {} requests/minute per key unless a key has its own limit.</div>\
         <div class=\"card\"><h2 class=\"first\">Requests per day (last {} days, all keys)</h2>\
         <div class=\"legend\"><span><i class=\"k-served\"></i>served</span>\
         <span><i class=\"k-limited\"></i>rate limited (429)</span></div>{}</div>\
         <h2>Per key and day</h2><table><thead><tr><th>Day (UTC)</th><th>Key</th><th class=\"num\">Requests</th>\
         <th class=\"num\">Input tokens</th><th class=\"num\">Output tokens</th><th class=\"num\">429s</th>\
         <th class=\"num\">Errors</th></tr></thead><tbody id=\"usage-rows\">{table}</tbody></table>\
         <h2>Limits per key</h2><table><thead><tr><th>Key</th><th>Hint</th><th class=\"num\">Requests/minute</th>\
         <th>Source</th></tr></thead><tbody>{limit_rows}</tbody></table>",
        esc(plan),
        esc(&number(u64::from(plan_rpm))),
        esc(&days.len().to_string()),
        chart(days, rows),
    );
    layout("Usage", Some(chrome), &body)
}

/// Inline SVG bar chart: one bar per day (requests of all keys), the 429 share stacked on top,
/// the count written above each bar and the date below. No script.
pub fn chart(days: &[String], rows: &[DailyUsage]) -> String {
    let mut totals: BTreeMap<&str, (u64, u64)> =
        days.iter().map(|d| (d.as_str(), (0, 0))).collect();
    for row in rows {
        if let Some(total) = totals.get_mut(row.day.as_str()) {
            total.0 += row.requests.saturating_sub(row.rate_limited);
            total.1 += row.rate_limited;
        }
    }
    let max = totals
        .values()
        .map(|(a, b)| a + b)
        .max()
        .unwrap_or(0)
        .max(1);
    let (width, height, top, bottom, left) = (960.0_f64, 240.0_f64, 22.0_f64, 34.0_f64, 8.0_f64);
    let plot = height - top - bottom;
    let slot = (width - 2.0 * left) / days.len().max(1) as f64;
    let bar = (slot * 0.7).max(2.0);
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"Requests per day\">\
         <line class=\"axis\" x1=\"{left}\" y1=\"{base}\" x2=\"{end}\" y2=\"{base}\"/>",
        base = height - bottom,
        end = width - left
    );
    for (i, (day, (served, limited))) in totals.iter().enumerate() {
        let x = left + slot * i as f64 + (slot - bar) / 2.0;
        let served_h = plot * *served as f64 / max as f64;
        let limited_h = plot * *limited as f64 / max as f64;
        let base = height - bottom;
        let _ = write!(
            svg,
            "<g><title>{}: {} served, {} rate limited</title>\
             <rect class=\"bar\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{served_h:.1}\"/>\
             <rect class=\"limited\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{limited_h:.1}\"/>",
            esc(day),
            esc(&number(*served)),
            esc(&number(*limited)),
            base - served_h,
            base - served_h - limited_h,
        );
        let total = served + limited;
        if total > 0 {
            let _ = write!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                x + bar / 2.0,
                base - served_h - limited_h - 5.0,
                esc(&number(total))
            );
        }
        // Label every day when there are few, otherwise every 5th, so labels never overlap.
        if days.len() <= 10 || i % 5 == 0 || i + 1 == days.len() {
            let _ = write!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                x + bar / 2.0,
                height - 12.0,
                esc(day.get(5..).unwrap_or(day))
            );
        }
        svg.push_str("</g>");
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use compresh_keys::{KeyHash, KeyId};

    use super::*;

    fn key(name: &str) -> ApiKeyRecord {
        ApiKeyRecord {
            id: KeyId::generate(),
            account_id: 1,
            name: name.to_owned(),
            environment: Some("<b>prod</b>".to_owned()),
            hint: "comp_…abcd".to_owned(),
            hash: KeyHash::from_bytes([1; 32]),
            created_at: 0,
            last_used_at: None,
            revoked_at: None,
            expires_at: None,
            rpm: None,
            allowed_providers: vec![],
            allowed_models: vec![],
            replaced_by: None,
        }
    }

    #[test]
    fn user_supplied_text_is_escaped_everywhere() {
        let chrome = Chrome {
            email: "<i>@x",
            account: "a\"b",
            csrf: "c\"><script>",
            active: "/dashboard/usage",
        };
        let page = api_keys(
            &chrome,
            &[key("<script>alert(1)</script>")],
            1,
            &Notice::None,
        );
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!page.contains("<script>alert"));
        assert!(!page.contains("<b>prod"));
        assert!(!page.contains("<i>@x"));
        assert!(!page.contains("c\"><script>"));
        // The only script element is our own asset.
        assert_eq!(page.matches("<script").count(), 1);
        // No inline styles or scripts: the CSP (style-src/script-src 'self') would block them.
        assert!(!page.contains(" style="));
        assert!(!page.contains(" onclick=") && !page.contains(" onsubmit="));
    }

    #[test]
    fn chart_has_a_bar_and_label_per_day() {
        let days: Vec<String> = vec!["2024-05-01".into(), "2024-05-02".into()];
        let id = KeyId::generate();
        let row = DailyUsage {
            day: "2024-05-02".into(),
            key_id: id,
            account_id: 1,
            requests: 1234,
            errors: 0,
            rate_limited: 34,
            input_tokens: 5,
            output_tokens: 6,
        };
        let svg = chart(&days, &[row]);
        assert_eq!(svg.matches("class=\"bar\"").count(), 2);
        assert!(svg.contains(">1,234</text>"));
        assert!(svg.contains(">05-01</text>") && svg.contains(">05-02</text>"));
        assert!(svg.contains("1,200 served, 34 rate limited"));
    }
}
