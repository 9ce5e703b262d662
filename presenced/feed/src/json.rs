//! JSON Feed 1.0 and 1.1 (<https://jsonfeed.org/version/1.1>).
//!
//! Read through `serde_json::Value` rather than typed structs so that one malformed item
//! (a number where a string belongs, an item that is not an object) is skipped with a
//! warning instead of failing the whole feed. `serde_json` limits nesting to 128 levels.

use serde_json::{Map, Value};
use url::Url;

use crate::html::truncate_chars;
use crate::item::{
    to_text, Draft, Mode, IMAGE_ENCLOSURE, IMAGE_THUMBNAIL, MAX_TAGS, MAX_TEXT_CHARS,
};
use crate::{Feed, Format, ParseError, Warnings, MAX_ITEMS};

pub(crate) fn parse(
    text: &str,
    feed_url: &Url,
    warnings: &mut Warnings,
) -> Result<Feed, ParseError> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        let message = e.to_string();
        let message =
            message.rsplit_once(" at line ").map_or(message.as_str(), |(m, _)| m).to_owned();
        ParseError::Json { line: e.line(), column: e.column(), message }
    })?;
    let Value::Object(feed) = value else {
        return Err(ParseError::NotAFeed("json document is not an object".to_owned()));
    };
    match feed.get("version").and_then(Value::as_str) {
        Some(v) if v.contains("jsonfeed.org/version/") => {}
        Some(v) => {
            return Err(ParseError::NotAFeed(format!(
                "json document with version {:?} is not a json feed",
                crate::item::short(v)
            )))
        }
        None if feed.contains_key("rss") => {
            return Err(ParseError::NotAFeed("rss-in-json document is not a json feed".to_owned()))
        }
        None if feed.get("items").is_some_and(Value::is_array) => {
            warnings.push("json feed without a version; read as json feed 1.1".to_owned());
        }
        None => {
            return Err(ParseError::NotAFeed(
                "json document without a json feed version".to_owned(),
            ))
        }
    }

    let title = str_field(&feed, "title")
        .map(|t| truncate_chars(to_text(t, Mode::Html), MAX_TEXT_CHARS))
        .filter(|t| !t.is_empty());
    let mut items = Vec::new();
    match feed.get("items") {
        Some(Value::Array(list)) => {
            if list.len() > MAX_ITEMS {
                warnings.push(format!(
                    "more than {MAX_ITEMS} items; only the first {MAX_ITEMS} were read"
                ));
            }
            for (i, entry) in list.iter().take(MAX_ITEMS).enumerate() {
                let index = i + 1;
                let Value::Object(entry) = entry else {
                    warnings.push(format!("item {index}: skipped: not an object"));
                    continue;
                };
                if let Some(item) = draft(entry, index, feed_url).finish(warnings) {
                    items.push(item);
                }
            }
        }
        Some(_) => warnings.push("\"items\" is not an array; no items read".to_owned()),
        None => warnings.push("no \"items\" in the json feed".to_owned()),
    }
    Ok(Feed { title, format: Format::JsonFeed, items, warnings: Vec::new() })
}

fn str_field<'v>(object: &'v Map<String, Value>, key: &str) -> Option<&'v str> {
    object.get(key).and_then(Value::as_str)
}

fn draft(entry: &Map<String, Value>, index: usize, base: &Url) -> Draft {
    let mut draft = Draft { index, ..Draft::default() };
    draft.id = match entry.get("id") {
        Some(Value::String(s)) => Some(s.clone()),
        // JSON Feed 1.0 did not insist on strings.
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    for key in ["url", "external_url"] {
        if let Some(url) = str_field(entry, key) {
            draft.links.push((url.to_owned(), base.clone()));
        }
    }
    draft.title = str_field(entry, "title").map(|t| (t.to_owned(), Mode::Html));
    draft.summary = str_field(entry, "summary").map(|t| (t.to_owned(), Mode::Html));
    draft.content = str_field(entry, "content_text")
        .filter(|t| !t.trim().is_empty())
        .map(|t| (t.to_owned(), Mode::Text))
        .or_else(|| str_field(entry, "content_html").map(|t| (t.to_owned(), Mode::Html)));
    if let Some(Value::Array(tags)) = entry.get("tags") {
        draft.tags = tags
            .iter()
            .filter_map(Value::as_str)
            .take(MAX_TAGS)
            .map(|t| (t.to_owned(), Mode::Html))
            .collect();
    }
    draft.published.extend(str_field(entry, "date_published").map(str::to_owned));
    draft.updated.extend(str_field(entry, "date_modified").map(str::to_owned));
    if let Some(image) = str_field(entry, "image") {
        draft.images.push((IMAGE_ENCLOSURE, image.to_owned(), base.clone()));
    }
    if let Some(banner) = str_field(entry, "banner_image") {
        draft.images.push((IMAGE_THUMBNAIL, banner.to_owned(), base.clone()));
    }
    if let Some(Value::Array(attachments)) = entry.get("attachments") {
        for attachment in attachments.iter().take(16).filter_map(Value::as_object) {
            let is_image = str_field(attachment, "mime_type")
                .is_some_and(|m| m.trim().to_ascii_lowercase().starts_with("image/"));
            if let (true, Some(url)) = (is_image, str_field(attachment, "url")) {
                draft.images.push((IMAGE_THUMBNAIL, url.to_owned(), base.clone()));
            }
        }
    }
    draft
}
