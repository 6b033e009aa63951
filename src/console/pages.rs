//! The console's pages, rendered on the server with `maud` (every value escaped). No
//! script anywhere; one stylesheet from the console itself.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use maud::{html, Markup, DOCTYPE};

use super::session::Session;
use crate::auth::Permission;
use crate::domain::ShipmentRecord;
use crate::lifecycle::list::{Attention, ListItem, Overview};

/// What every page needs: who reads it, in which zone, and the CSRF token of its forms.
pub struct Frame<'a> {
    pub session: Option<&'a Session>,
    pub tz: Option<Tz>,
    /// The identity-provider instances, default first, when the deployment has several
    /// (empty in single-IdP mode: nothing about instances is shown).
    pub instances: Vec<String>,
}

impl Frame<'_> {
    fn csrf(&self) -> Markup {
        match self.session {
            Some(s) => html! { input type="hidden" name="csrf" value=(s.csrf); },
            None => html! {},
        }
    }
}

/// A time in the reader's zone, with UTC beside it.
pub fn when(t: DateTime<Utc>, tz: Option<Tz>) -> Markup {
    let utc = t.format("%Y-%m-%d %H:%M UTC").to_string();
    let iso = t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    match tz.filter(|z| *z != chrono_tz::UTC) {
        Some(z) => {
            let local = t.with_timezone(&z).format("%Y-%m-%d %H:%M %Z").to_string();
            html! { time datetime=(iso) { (local) " " span.utc { "(" (utc) ")" } } }
        }
        None => html! { time datetime=(iso) { (utc) } },
    }
}

fn opt_when(t: Option<DateTime<Utc>>, tz: Option<Tz>) -> Markup {
    match t {
        Some(t) => when(t, tz),
        None => html! { "—" },
    }
}

pub fn layout(f: &Frame, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · FIDO connector" }
                link rel="stylesheet" href="/console/static/console.css";
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    span.brand { "FIDO connector" }
                    @if let Some(s) = f.session {
                        nav aria-label="Console" {
                            ul {
                                li { a href="/console" { "Find" } }
                                @if s.may(Permission::ShipmentsCreate) {
                                    li { a href="/console/order" { "Order a key" } }
                                    li { a href="/console/bulk" { "Bulk" } }
                                }
                                li { a href="/console/settings" { "Time zone" } }
                            }
                        }
                        form.signout method="post" action="/console/signout" {
                            (f.csrf())
                            span.who { (s.name) }
                            " "
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main #main tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
                footer {
                    p { "Times in " (f.tz.map_or("UTC", |z| z.name())) ". "
                        @if f.session.is_some() { a href="/console/settings" { "Change" } } }
                }
            }
        }
    }
}

/// The roles a person needs for the console, and what each one allows.
const ROLE_HELP: [(&str, &str); 4] = [
    ("Shipments.Read", "find users and shipments"),
    ("Pin.Resend", "resend a PIN"),
    (
        "Shipments.Manage",
        "retry a failed shipment, resolve an unknown create",
    ),
    ("Shipments.Create", "order keys, one or in bulk"),
];

pub fn no_roles(f: &Frame) -> Markup {
    layout(
        f,
        "No access yet",
        html! {
            p { "You are signed in, but you hold none of the connector's app roles, so there is nothing here you may see." }
            p { "Ask your Entra ID administrator to assign you one of these roles on the FIDO connector's enterprise application:" }
            ul { @for (r, what) in ROLE_HELP { li { code { (r) } ": " (what) } } }
            p { "Helpdesk staff usually need " code { "Shipments.Read" } " and " code { "Pin.Resend" } "." }
        },
    )
}

pub fn message(f: &Frame, title: &str, text: &str) -> Markup {
    layout(
        f,
        title,
        html! { p { (text) } p { a href="/console" { "Back to Find" } } },
    )
}

pub fn signed_out() -> Markup {
    let f = Frame {
        session: None,
        tz: None,
        instances: Vec::new(),
    };
    layout(
        &f,
        "Signed out",
        html! { p { "You are signed out." } p { a href="/console/signin" { "Sign in again" } } },
    )
}

pub fn signin_needed(reason: &str) -> Markup {
    let f = Frame {
        session: None,
        tz: None,
        instances: Vec::new(),
    };
    layout(
        &f,
        "Sign in",
        html! { p { (reason) } p { a.button href="/console/signin" { "Sign in with Entra ID" } } },
    )
}

fn state_badge(state: &str, attention: bool) -> Markup {
    html! {
        span class={ "badge " (state) } { (state) }
        @if attention { " " span.badge.attention { "needs attention" } }
    }
}

fn shipment_href(it: &ListItem) -> String {
    format!(
        "/console/shipments/{}",
        it.shipment_id.as_deref().unwrap_or(&it.request_id)
    )
}

pub fn find(f: &Frame, query: &str, notice: Option<&str>, o: &Overview) -> Markup {
    let tz = f.tz;
    layout(
        f,
        "Find",
        html! {
            form.search method="get" action="/console" role="search" {
                label for="q" { "UPN, object id, shipment id or serial number" }
                div.row {
                    input #q type="search" name="q" value=(query) autocomplete="off" spellcheck="false";
                    button type="submit" { "Find" }
                }
            }
            @if let Some(n) = notice { p.notice role="status" { (n) } }
            h2 { "Shipments by state" }
            p.muted { "As of " (when(o.at, tz)) " (read at most every " (super::OVERVIEW_TTL.as_secs()) " s)." }
            @if o.by_step.is_empty() {
                p { "None in processing, none failed." }
            } @else {
                dl.counts {
                    @for (step, n) in &o.by_step {
                        div { dt { (step_words(step)) } dd { (n) } }
                    }
                }
            }
            h2 { "Needing attention (" (o.attention_total) ")" }
            @if o.attention.is_empty() {
                p { "Nothing needs attention." }
            } @else {
                div.scroll {
                    table {
                        caption.visually-hidden { "Shipments needing attention, oldest first" }
                        thead { tr { th scope="col" { "Shipment" } th scope="col" { "User" } th scope="col" { "Cause" } th scope="col" { "Since" } } }
                        tbody {
                            @for a in &o.attention { (attention_row(a, tz)) }
                        }
                    }
                }
                @if o.attention_total > o.attention.len() {
                    p { "The oldest " (o.attention.len()) " are shown." }
                }
            }
        },
    )
}

fn attention_row(a: &Attention, tz: Option<Tz>) -> Markup {
    let id = a.item.shipment_id.as_deref().unwrap_or(&a.item.request_id);
    html! {
        tr {
            td { a href=(shipment_href(&a.item)) { (id) } }
            td { a href={ "/console/users/" (a.item.user_id) } { (a.item.user_id) } }
            td { (a.cause) }
            td { (when(a.since, tz)) }
        }
    }
}

fn step_words(step: &str) -> &'static str {
    match step {
        "accepted" => "ordered, waiting for YubiEnterprise",
        "ongoing" => "waiting for Yubico",
        "registered" => "registered, PIN mail pending",
        "complete" => "complete",
        "failed" => "failed",
        "unknown" => "create outcome unknown",
        _ => "other",
    }
}

pub fn user(f: &Frame, user: &str, items: &[ListItem], more: bool) -> Markup {
    let tz = f.tz;
    layout(
        f,
        &format!("Shipments for {user}"),
        html! {
            @if items.is_empty() {
                p { "No shipment for " strong { (user) } "." }
            } @else {
                div.scroll {
                    table {
                        caption.visually-hidden { "Shipments, newest first" }
                        thead { tr {
                            th scope="col" { "Shipment" } th scope="col" { "State" } th scope="col" { "Yubico" }
                            th scope="col" { "Serial" } th scope="col" { "Ordered" } th scope="col" { "Updated" } th scope="col" { "Completed" }
                        } }
                        tbody {
                            @for it in items {
                                tr {
                                    td { a href=(shipment_href(it)) { (it.shipment_id.as_deref().unwrap_or(&it.request_id)) } }
                                    td { (state_badge(it.state, it.needs_attention)) }
                                    td { (it.ye_state.as_ref().map_or("—", |s| s.meaning)) }
                                    td { (it.serial_number.map_or("—".to_string(), |s| s.to_string())) }
                                    td { (when(it.created_at, tz)) }
                                    td { (when(it.updated_at, tz)) }
                                    td { (opt_when(it.completed_at, tz)) }
                                }
                            }
                        }
                    }
                }
                @if more { p { "The newest " (items.len()) " are shown." } }
            }
        },
    )
}

/// The masked form of a mail address: `a***e@contoso.com`.
pub fn mask_email(addr: &str) -> String {
    match addr.rsplit_once('@') {
        Some((local, domain)) => {
            let chars: Vec<char> = local.chars().collect();
            let shown = match chars.as_slice() {
                [] => String::new(),
                [a] => format!("{a}***"),
                [a, .., z] => format!("{a}***{z}"),
            };
            format!("{shown}@{domain}")
        }
        None => "***".into(),
    }
}

/// A shipment's state in plain words, and what happens next.
pub fn state_words(rec: &ShipmentRecord, tz: Option<Tz>) -> (String, Markup) {
    use crate::domain::Step;
    // A record names its instance only when it is not the Entra one: Okta, the only other
    // kind.
    let okta = rec.idp.is_some();
    let retry = |what: &str| -> Markup {
        match (&rec.error, rec.next_attempt_at) {
            (Some(e), Some(t)) if !e.terminal => html! {
                (what) " is retried at " (when(t, tz)) " because " (e.message) "."
            },
            _ => html! { (what) " happens at the next processing run." },
        }
    };
    match rec.step {
        Step::Accepted => (
            "Ordered: waiting for YubiEnterprise to confirm the shipment".into(),
            retry("The order at YubiEnterprise"),
        ),
        Step::Ongoing => {
            let ready = rec
                .ye_state_id
                .is_some_and(crate::domain::shipment::ye_state_ready);
            if ready {
                (
                    "Yubico has programmed the key".into(),
                    retry(if okta {
                        "Activating the key at Okta"
                    } else {
                        "Registering the key with Entra ID"
                    }),
                )
            } else {
                let label = rec
                    .ye_state_id
                    .map(crate::domain::shipment::ye_state_label)
                    .unwrap_or("not reported yet");
                (
                    format!("Waiting for Yubico to program the key (YubiEnterprise: {label})"),
                    html! {
                        "The connector asks YubiEnterprise at each processing run."
                        @if let Some(t) = rec.challenge_expires_at {
                            " Yubico must program the key before " (when(t, tz)) ", when " (if okta { "the Okta enrollment's" } else { "Entra's" }) " challenge expires."
                        }
                    },
                )
            }
        }
        Step::Registered if okta => (
            "Okta activated the key; it has not sent the PIN yet".into(),
            retry("Asking Okta to send the PIN"),
        ),
        Step::Registered => (
            "The key is registered with Entra ID; the PIN mail is not sent yet".into(),
            retry("The PIN mail"),
        ),
        Step::Complete => (
            "Complete: the key is registered and the PIN was mailed".into(),
            html! { "Nothing more happens. The PIN can be resent." },
        ),
        Step::Failed => (
            format!(
                "Failed: {}",
                rec.error
                    .as_ref()
                    .map_or("no cause recorded", |e| e.message.as_str())
            ),
            html! { "Nothing happens unless an operator retries it." },
        ),
        Step::Unknown => (
            "The create's outcome at YubiEnterprise is unknown".into(),
            html! { "An operator must look the request up at YubiEnterprise and say whether it was created." },
        ),
    }
}

pub struct ShipmentView<'a> {
    pub rec: &'a ShipmentRecord,
    /// The name of its identity-provider instance.
    pub idp: String,
    pub resends_left: usize,
    pub notice: Option<&'a str>,
}

pub fn shipment(f: &Frame, v: &ShipmentView) -> Markup {
    let (rec, tz) = (v.rec, f.tz);
    let id = rec.ye_shipment_id.as_deref().unwrap_or(&rec.request_id);
    let (headline, next) = state_words(rec, tz);
    let session = f.session;
    let may = |p| session.is_some_and(|s| s.may(p));
    let path = format!("/console/shipments/{id}");
    let can_resend = may(Permission::PinResend) && rec.is_registered();
    let can_retry = may(Permission::ShipmentsManage) && rec.step == crate::domain::Step::Failed;
    let can_resolve = may(Permission::ShipmentsManage) && rec.step == crate::domain::Step::Unknown;
    layout(
        f,
        &format!("Shipment {id}"),
        html! {
            @if let Some(n) = v.notice { p.notice role="status" { (n) } }
            section aria-labelledby="now" {
                h2 #now { "Now" }
                p.headline { (headline) }
                p { (next) }
            }
            dl.facts {
                div { dt { "User" } dd { a href={ "/console/users/" (rec.user_id) } { (rec.user_id) } } }
                @if !f.instances.is_empty() {
                    div { dt { "Identity provider" } dd { (v.idp) } }
                }
                div { dt { (if rec.idp.is_some() { "User id at the identity provider" } else { "Entra object id" }) } dd { (rec.entra_user_id) } }
                div { dt { "Request id" } dd { (rec.request_id) } }
                div { dt { "Serial number" } dd { (rec.serial_number.map_or("—".to_string(), |s| s.to_string())) } }
                div { dt { "Key name" } dd { (rec.yubikey_name.as_deref().unwrap_or("—")) } }
                div { dt { "PIN mail to" } dd { (rec.emails_to.iter().map(|e| mask_email(e)).collect::<Vec<_>>().join(", ")) } }
                div { dt { "Ordered" } dd { (when(rec.created_at, tz)) } }
                div { dt { "Updated" } dd { (when(rec.updated_at, tz)) } }
                div { dt { "Completed" } dd { (opt_when(rec.ended_at(), tz)) } }
            }
            section aria-labelledby="actions" {
                h2 #actions { "Actions" }
                @if can_resend {
                    p { a.button href={ (path) "/resend" } { "Resend the PIN…" } }
                }
                @if can_retry {
                    form method="post" action={ (path) "/retry" } {
                        (f.csrf())
                        button type="submit" { "Retry the shipment" }
                    }
                }
                @if can_resolve {
                    form method="post" action={ (path) "/retry" } {
                        (f.csrf())
                        fieldset {
                            legend { "Did YubiEnterprise create request " (rec.request_id) "?" }
                            div { input #r-created type="radio" name="resolution" value="created"; " " label for="r-created" { "Yes, as shipment:" } }
                            div { label for="ye" { "YubiEnterprise shipment id" } input #ye type="text" name="ye_shipment_id" autocomplete="off"; }
                            div { input #r-not type="radio" name="resolution" value="not_created"; " " label for="r-not" { "No, it was not created (order it again)" } }
                        }
                        button type="submit" { "Resolve" }
                    }
                }
                @if !(can_resend || can_retry || can_resolve) { p { "Nothing your roles allow can be done with this shipment now." } }
            }
            section aria-labelledby="history" {
                h2 #history { "History" }
                ol.history {
                    @for e in &rec.events {
                        li {
                            (when(e.at, tz)) " — " strong { (e.kind.replace('_', " ")) }
                            @if let Some(d) = &e.detail { ": " (d) }
                            @if e.count > 1 { " (" (e.count) " times" @if let Some(l) = e.last_at { ", last " (when(l, tz)) } ")" }
                            @if let Some(by) = &e.by { " · by " (by) }
                        }
                    }
                }
            }
        },
    )
}

pub fn confirm_resend(f: &Frame, rec: &ShipmentRecord, left: usize, limit: usize) -> Markup {
    let id = rec.ye_shipment_id.as_deref().unwrap_or(&rec.request_id);
    let to: Vec<String> = rec.emails_to.iter().map(|e| mask_email(e)).collect();
    layout(
        f,
        "Resend the PIN?",
        html! {
            p { "The PIN of shipment " strong { (id) } " goes by mail to: " strong { (to.join(", ")) } "." }
            p { (left) " of " (limit) " resends are left in the current window." }
            @if left > 0 {
                form method="post" action={ "/console/shipments/" (id) "/resend" } {
                    (f.csrf())
                    button type="submit" { "Resend the PIN" }
                    " "
                    a href={ "/console/shipments/" (id) } { "Cancel" }
                }
            } @else {
                p { a href={ "/console/shipments/" (id) } { "Back to the shipment" } }
            }
        },
    )
}

/// The order form: the create request's flat form (the import file's columns).
pub struct OrderForm<'a> {
    pub values: &'a std::collections::HashMap<String, String>,
    /// The field (column) an error belongs to, and the API's words.
    pub error: Option<(&'a str, &'a str)>,
    /// An error of the whole request (no field).
    pub general: Option<&'a str>,
    pub checks: Option<&'a crate::lifecycle::DryRun>,
}

fn label_of(column: &str) -> &'static str {
    match column {
        "user_id" => "User (UPN or object id)",
        "pin_length" => "PIN length (digits)",
        "emails_to" => "Send the PIN to (addresses, separated by ;)",
        "recipient_company" => "Company",
        "recipient_email" => "Recipient email",
        "recipient_firstname" => "First name",
        "recipient_lastname" => "Last name",
        "recipient_telephone" => "Telephone",
        "street_line1" => "Street",
        "street_line2" => "Street, second line",
        "city" => "City",
        "region" => "Region (state or province)",
        "postal_code" => "Postal code",
        "country_code_2" => "Country (two letters)",
        "product_id" => "Product id",
        "inventory_product_id" => "Inventory product id",
        "customization_id" => "Customization id",
        "yubikey_name" => "Key name",
        "delivery_type" => "Delivery type (1 standard, 2 expedited)",
        "reseller_organization_id" => "Reseller organization id",
        "idp_instance" => "Identity provider",
        _ => "Field",
    }
}

pub fn order(f: &Frame, form: &OrderForm) -> Markup {
    let required = |c: &str| {
        crate::domain::request::COLUMNS
            .iter()
            .any(|k| k.name == c && k.header_required)
    };
    let can_order = form.checks.is_some_and(|c| c.would_create) && form.error.is_none();
    layout(
        f,
        "Order a key",
        html! {
            p { "The request is checked first (the same pre-flight checks as the API's dry run); nothing is ordered until you confirm." }
            @if let Some(g) = form.general { p.error role="alert" { (g) } }
            @if let Some(d) = form.checks {
                section aria-labelledby="checks" {
                    h2 #checks { "Pre-flight checks" }
                    ul.checks {
                        @for c in &d.checks {
                            li { span class={ "badge " (format!("{:?}", c.result).to_lowercase()) } { (format!("{:?}", c.result).to_lowercase()) } " " strong { (c.name) } ": " (c.message) }
                        }
                    }
                    @if d.would_create { p { "The key can be ordered." } } @else { p.error { "The key would not register: fix what failed first." } }
                }
            }
            form.order method="post" action="/console/order" novalidate {
                (f.csrf())
                @if !f.instances.is_empty() {
                    div.field {
                        label for="f-idp_instance" { (label_of("idp_instance")) }
                        @let chosen = form.values.get("idp_instance").map(String::as_str).unwrap_or("");
                        select id="f-idp_instance" name="idp_instance" {
                            @for (n, i) in f.instances.iter().enumerate() {
                                option value=(i) selected[chosen == i.as_str() || (chosen.is_empty() && n == 0)] {
                                    (i) @if n == 0 { " (default)" }
                                }
                            }
                        }
                    }
                }
                @for c in crate::domain::request::COLUMNS.iter().filter(|c| c.name != "idp_instance") {
                    @let id = format!("f-{}", c.name);
                    @let err = form.error.filter(|(col, _)| *col == c.name).map(|(_, m)| m);
                    div.field {
                        label for=(id) { (label_of(c.name)) @if required(c.name) { " " span.req { "(required)" } } }
                        @if let Some(m) = err {
                            input id=(id) name=(c.name) value=(form.values.get(c.name).map(String::as_str).unwrap_or("")) aria-invalid="true" aria-describedby={ (id) "-err" };
                            p.error id={ (id) "-err" } { (m) }
                        } @else {
                            input id=(id) name=(c.name) value=(form.values.get(c.name).map(String::as_str).unwrap_or(""));
                        }
                    }
                }
                div.row {
                    button type="submit" name="action" value="check" { "Check" }
                    @if can_order { " " button.primary type="submit" name="action" value="order" { "Order this key" } }
                }
            }
        },
    )
}

pub struct BulkRow {
    pub line: usize,
    pub user: String,
    pub outcome: Result<Option<String>, String>,
}

pub fn bulk(
    f: &Frame,
    error: Option<&str>,
    rows: &[BulkRow],
    csv_b64: Option<&str>,
    result_b64: Option<&str>,
) -> Markup {
    let valid = rows.iter().filter(|r| r.outcome.is_ok()).count();
    layout(
        f,
        "Bulk order",
        html! {
            p { "Upload a CSV file with the import file's columns (" code { (crate::bulk::columns().collect::<Vec<_>>().join(", ")) } "). Each row is checked; then you order the valid rows. Ordering the same file twice orders nothing twice." }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            form method="post" action="/console/bulk" enctype="multipart/form-data" {
                (f.csrf())
                input type="hidden" name="action" value="check";
                div.field { label for="file" { "CSV file" } input #file type="file" name="file" accept=".csv,text/csv"; }
                button type="submit" { "Check the file" }
            }
            @if !rows.is_empty() {
                h2 { "Rows (" (valid) " of " (rows.len()) " valid)" }
                div.scroll {
                    table {
                        thead { tr { th scope="col" { "Line" } th scope="col" { "User" } th scope="col" { "Result" } } }
                        tbody {
                            @for r in rows {
                                tr {
                                    td { (r.line) }
                                    td { (r.user) }
                                    td {
                                        @match &r.outcome {
                                            Ok(Some(id)) => { "ordered: " a href={ "/console/shipments/" (id) } { (id) } },
                                            Ok(None) => { "valid" },
                                            Err(e) => { span.error { (e) } },
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                @if let Some(csv) = csv_b64 {
                    @if valid > 0 {
                        form method="post" action="/console/bulk" enctype="multipart/form-data" {
                            (f.csrf())
                            input type="hidden" name="action" value="order";
                            input type="hidden" name="csv" value=(csv);
                            button.primary type="submit" { "Order the " (valid) " valid rows" }
                        }
                    }
                }
                @if let Some(result) = result_b64 {
                    form method="post" action="/console/bulk/result.csv" {
                        (f.csrf())
                        input type="hidden" name="result" value=(result);
                        button type="submit" { "Download the result (CSV)" }
                    }
                }
            }
        },
    )
}

pub fn settings(f: &Frame) -> Markup {
    let current = f.tz.map_or("UTC", |z| z.name());
    layout(
        f,
        "Time zone",
        html! {
            form method="post" action="/console/settings" {
                (f.csrf())
                div.field {
                    label for="tz" { "Show times in" }
                    select #tz name="tz" {
                        @for z in chrono_tz::TZ_VARIANTS.iter().filter(|z| z.name().contains('/') || z.name() == "UTC") {
                            @if z.name() == current { option value=(z.name()) selected { (z.name()) } }
                            @else { option value=(z.name()) { (z.name()) } }
                        }
                    }
                }
                button type="submit" { "Save" }
            }
        },
    )
}

/// The stylesheet: readable at laptop and phone widths, visible focus, AA contrast.
pub const CSS: &str = include_str!("console.css");
