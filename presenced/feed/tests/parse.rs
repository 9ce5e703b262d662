//! Behaviour of `presence_feed::parse` on small hand-written documents.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use presence_feed::{canonical_link, parse, Feed, Format, Item, ParseError, MAX_ITEMS};
use url::Url;

fn base() -> Url {
    Url::parse("https://example.com/blog/feed.xml").unwrap()
}

fn ok(doc: &str) -> Feed {
    parse(doc.as_bytes(), &base(), None).unwrap_or_else(|e| panic!("{e}"))
}

fn err(doc: &str) -> String {
    parse(doc.as_bytes(), &base(), None).unwrap_err().to_string()
}

fn rss(items: &str) -> String {
    format!(
        r#"<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>{items}</channel></rss>"#
    )
}

#[test]
fn detects_formats_by_content() {
    let f = |doc: &str, ct: Option<&str>| parse(doc.as_bytes(), &base(), ct).unwrap().format;
    assert_eq!(f(&rss(""), Some("application/json")), Format::Rss2);
    assert_eq!(f(r#"<rss version="0.91"><channel/></rss>"#, None), Format::Rss09x);
    assert_eq!(f(r#"<rss><channel/></rss>"#, None), Format::Rss2);
    assert_eq!(
        f(
            r#"<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/"><channel/></rdf:RDF>"#,
            None
        ),
        Format::Rss1Rdf
    );
    assert_eq!(
        f(
            r#"<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://my.netscape.com/rdf/simple/0.9/"><channel/></rdf:RDF>"#,
            None
        ),
        Format::Rss09x
    );
    assert_eq!(
        f(r#"<feed xmlns="http://www.w3.org/2005/Atom"/>"#, Some("text/html")),
        Format::Atom1
    );
    assert_eq!(f(r#"<feed version="0.3" xmlns="http://purl.org/atom/ns#"/>"#, None), Format::Atom1);
    assert_eq!(
        f(r#"{"version":"https://jsonfeed.org/version/1.1","items":[]}"#, Some("text/xml")),
        Format::JsonFeed
    );
}

#[test]
fn rejects_non_feeds_with_one_line_errors() {
    assert_eq!(err(""), "empty document");
    assert_eq!(err(" \n\t "), "empty document");
    assert_eq!(
        err("<!DOCTYPE html><html><body>hi</body></html>"),
        "not a feed: root element <html>"
    );
    assert_eq!(err("<feed xmlns='urn:other'/>"), "not a feed: root element <feed>");
    assert_eq!(err("Not Found"), "not a feed: document is neither xml nor json");
    assert_eq!(err("<!-- nothing -->"), "not a feed: no root element");
    assert_eq!(err("[1,2]"), "not a feed: json document is not an object");
    assert_eq!(err(r#"{"title":"x"}"#), "not a feed: json document without a json feed version");
    assert_eq!(
        err(r#"{"version":"1.0","items":[]}"#),
        "not a feed: json document with version \"1.0\" is not a json feed"
    );
    assert!(
        err(r#"{"version":"#).starts_with("line 1, column 11: invalid json: "),
        "{}",
        err(r#"{"version":"#)
    );
}

#[test]
fn structural_xml_errors_name_the_line() {
    let doc = "<rss>\n<channel>\n<item>\n<title>x</title>\n</channel>\n</rss>";
    assert_eq!(err(doc), "line 5: unexpected </channel> (expected </item>)");
    let doc = "<rss>\n<channel>\n<item><title>x</title></item>\n";
    assert_eq!(err(doc), "line 4: document ends inside <channel> (truncated?)");
    let doc = "<rss><channel><item><title lang=\"en";
    assert_eq!(err(doc), "line 1: tag not closed before end of document (truncated?)");
    let doc = "<rss><channel><item><description><![CDATA[ never ends";
    assert!(err(doc).contains("cdata section not closed"), "{}", err(doc));
}

#[test]
fn rss_item_fields() {
    let feed = ok(&rss(r#"
        <item>
          <title>Caf&#233; &amp;amp; <![CDATA[<b>bold</b>]]></title>
          <link> /posts/1?utm_source=rss </link>
          <guid isPermaLink="false"> post-1 </guid>
          <description>&lt;p&gt;Short &lt;em&gt;summary&lt;/em&gt;&lt;/p&gt;</description>
          <content:encoded xmlns:content="http://purl.org/rss/1.0/modules/content/"><![CDATA[<p>Long</p>]]></content:encoded>
          <category>Rust</category><category>rust</category><category>Rust</category>
          <pubDate>Tue, 02 Jan 2024 10:00:00 +0100</pubDate>
          <enclosure url="/img/cover.jpg" type="image/jpeg" length="1"/>
        </item>"#));
    let item = &feed.items[0];
    assert_eq!(item.title, "Café & bold");
    assert_eq!(item.link.as_deref(), Some("https://example.com/posts/1?utm_source=rss"));
    assert_eq!(item.id.as_deref(), Some("post-1"));
    assert_eq!(item.summary, "Short summary");
    assert_eq!(item.tags, ["Rust", "rust"]);
    assert_eq!(item.published, Some(1704186000));
    assert_eq!(item.updated, None);
    assert_eq!(item.image.as_deref(), Some("https://example.com/img/cover.jpg"));
    assert_eq!(item.identity().as_deref(), Some("post-1"));
}

#[test]
fn rss_fallbacks() {
    let feed = ok(&rss(r#"
        <item><title>a</title><guid>https://example.com/a</guid></item>
        <item><title>b</title><guid isPermaLink="false">https://example.com/b</guid></item>
        <item><title>c</title><guid>/c</guid></item>
        <item><title>d</title><guid>1234</guid></item>
        <item><description></description><content:encoded xmlns:content="http://purl.org/rss/1.0/modules/content/">Only content</content:encoded><link>https://example.com/e</link></item>
        <item><link>https://example.com/f</link><dc:date xmlns:dc="http://purl.org/dc/elements/1.1/">2024-01-02T10:00:00Z</dc:date></item>
        <item><link>https://example.com/g</link><dc:date xmlns:dc="http://purl.org/dc/elements/1.1/">2020-01-01</dc:date><pubDate>Tue, 02 Jan 2024 10:00:00 GMT</pubDate></item>
    "#));
    let links: Vec<Option<&str>> = feed.items.iter().map(|i| i.link.as_deref()).collect();
    assert_eq!(
        links,
        [
            Some("https://example.com/a"),
            None,
            Some("https://example.com/c"),
            None,
            Some("https://example.com/e"),
            Some("https://example.com/f"),
            Some("https://example.com/g"),
        ]
    );
    assert_eq!(feed.items[4].summary, "Only content");
    assert_eq!(feed.items[5].published, Some(1704189600));
    // pubDate wins over dc:date whatever the order.
    assert_eq!(feed.items[6].published, Some(1704189600));
}

#[test]
fn media_images() {
    let feed = ok(&rss(r#"
        <item xmlns:media="http://search.yahoo.com/mrss/" xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd">
          <link>https://example.com/1</link>
          <itunes:image href="https://cdn.example.com/art.png"/>
          <media:thumbnail url="https://cdn.example.com/thumb.jpg"/>
          <media:group><media:content url="https://cdn.example.com/video.mp4" medium="video"/>
            <media:content url="https://cdn.example.com/big.jpg" medium="image"/></media:group>
        </item>
        <item xmlns:media="http://search.yahoo.com/mrss/">
          <link>https://example.com/2</link>
          <media:thumbnail url="javascript:alert(1)"/>
          <media:thumbnail url="//cdn.example.com/t2.jpg"/>
        </item>
        <item><link>https://example.com/3</link><enclosure url="https://cdn.example.com/ep.mp3" type="audio/mpeg"/></item>
        <item xmlns:media="http://search.yahoo.com/mrss/"><link>https://example.com/4</link>
          <media:content url="https://2.gravatar.com/avatar/abc?s=96" medium="image"/>
          <media:thumbnail url="https://cdn.example.com/post.jpg"/></item>
    "#));
    assert_eq!(feed.items[0].image.as_deref(), Some("https://cdn.example.com/big.jpg"));
    assert_eq!(feed.items[1].image.as_deref(), Some("https://cdn.example.com/t2.jpg"));
    assert_eq!(feed.items[2].image, None);
    // WordPress.com's author avatar is not the article's image.
    assert_eq!(feed.items[3].image.as_deref(), Some("https://cdn.example.com/post.jpg"));
}

#[test]
fn atom_entries() {
    let doc = r#"<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:base="https://example.org/base/">
  <title type="html">My &lt;em&gt;Blog&lt;/em&gt;</title>
  <link href="/"/>
  <entry xml:base="posts/">
    <id> tag:example.org,2024:1 </id>
    <title type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml">A <b>bold</b> &amp; <i>brave</i> title</div></title>
    <link rel="self" href="/self"/>
    <link rel="alternate" type="application/pdf" href="paper.pdf"/>
    <link rel="alternate" type="text/html" href="first.html"/>
    <link rel="enclosure" type="image/png" href="pic.png"/>
    <summary>5 &lt; 6 &amp;amp; &lt;b&gt;literal&lt;/b&gt;</summary>
    <content type="html">&lt;p&gt;Long content&lt;/p&gt;</content>
    <category term="rust" label="Rust"/><category label="only-label"/>
    <published>2024-01-02T10:00:00+01:00</published>
    <updated>2024-01-03T10:00:00Z</updated>
    <source><id>other</id><title>Other feed</title><link href="https://other.example/"/></source>
  </entry>
  <entry>
    <id>tag:example.org,2024:2</id>
    <link href="/two"/>
    <summary type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml"><p>One</p><p>Two<br/>Three</p></div></summary>
  </entry>
</feed>"#;
    let feed = ok(doc);
    assert_eq!(feed.format, Format::Atom1);
    assert_eq!(feed.title.as_deref(), Some("My Blog"));
    let e = &feed.items[0];
    assert_eq!(e.id.as_deref(), Some("tag:example.org,2024:1"));
    assert_eq!(e.title, "A bold & brave title");
    assert_eq!(e.link.as_deref(), Some("https://example.org/base/posts/first.html"));
    assert_eq!(e.summary, "5 < 6 & <b>literal</b>");
    assert_eq!(e.tags, ["rust", "only-label"]);
    assert_eq!(e.published, Some(1704186000));
    assert_eq!(e.updated, Some(1704276000));
    assert_eq!(e.image.as_deref(), Some("https://example.org/base/posts/pic.png"));
    let e = &feed.items[1];
    assert_eq!(e.link.as_deref(), Some("https://example.org/two"));
    assert_eq!(e.summary, "One Two Three");
}

#[test]
fn atom_03() {
    let doc = r#"<feed version="0.3" xmlns="http://purl.org/atom/ns#">
      <entry><id>x</id><title mode="escaped" type="text/html">a &lt;b&gt;b&lt;/b&gt;</title>
      <link rel="alternate" type="text/html" href="http://example.com/x"/>
      <issued>2004-01-02T10:00:00Z</issued><modified>2004-01-03T10:00:00Z</modified>
      <content type="application/octet-stream" mode="base64">AAAA</content>
      <summary mode="xml" type="text/html"><div>sum<br/>mary</div></summary></entry></feed>"#;
    let feed = ok(doc);
    let e = &feed.items[0];
    assert_eq!(e.title, "a b");
    assert_eq!(e.link.as_deref(), Some("http://example.com/x"));
    assert_eq!(e.published, Some(1073037600));
    assert_eq!(e.updated, Some(1073124000));
    assert_eq!(e.summary, "sum mary");
}

#[test]
fn xml_base_nesting_and_empty_base() {
    let doc = r#"<rss version="2.0" xml:base="https://a.example/root/"><channel xml:base="chan/">
        <item xml:base=""><link>x</link></item>
        <item xml:base="/abs/"><link>y</link></item>
        <item xml:base="https://b.example/"><link xml:base="deeper/">z</link></item>
        <item xml:base="http://[broken"><link>w</link></item>
        </channel></rss>"#;
    let feed = ok(doc);
    let links: Vec<&str> = feed.items.iter().map(|i| i.link.as_deref().unwrap()).collect();
    assert_eq!(
        links,
        [
            "https://a.example/root/chan/x",
            "https://a.example/abs/y",
            "https://b.example/deeper/z",
            "https://a.example/root/chan/w",
        ]
    );
}

#[test]
fn rss1_rdf() {
    let doc = r#"<?xml version="1.0"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/">
  <channel rdf:about="https://example.com/"><title>RDF feed</title><items><rdf:Seq><rdf:li rdf:resource="https://example.com/1"/></rdf:Seq></items></channel>
  <image rdf:about="https://example.com/logo.png"><title>Logo</title><link>https://example.com/</link></image>
  <item rdf:about="https://example.com/1"><title>One</title><link>https://example.com/1</link><dc:date>2024-01-02T10:00:00Z</dc:date><dc:subject>News</dc:subject></item>
  <item rdf:about="https://example.com/2"><title>Two</title></item>
</rdf:RDF>"#;
    let feed = ok(doc);
    assert_eq!(feed.format, Format::Rss1Rdf);
    assert_eq!(feed.title.as_deref(), Some("RDF feed"));
    assert_eq!(feed.items.len(), 2);
    assert_eq!(feed.items[0].published, Some(1704189600));
    assert_eq!(feed.items[0].tags, ["News"]);
    assert_eq!(feed.items[1].link.as_deref(), Some("https://example.com/2"));
}

#[test]
fn bad_entries_are_skipped_with_warnings() {
    let feed = ok(&rss(r#"
        <item><title>good</title><link>https://example.com/1</link></item>
        <item></item>
        <item><link>javascript:alert(1)</link><guid isPermaLink="false">g</guid></item>
        <item><title>no id</title></item>
        <item><link>https://example.com/2</link><pubDate>someday</pubDate></item>
    "#));
    assert_eq!(feed.items.len(), 4);
    assert_eq!(feed.items[1].link, None);
    assert_eq!(feed.items[1].id.as_deref(), Some("g"));
    assert_eq!(feed.items[3].published, None);
    let w = feed.warnings.join("\n");
    assert!(w.contains("item 2 (line 3): skipped: no id, link, title or text"), "{w}");
    assert!(
        w.contains("item 3 (line 4): link \"javascript:alert(1)\" ignored: unsupported scheme"),
        "{w}"
    );
    assert!(w.contains("item 4 (line 5): no id or link"), "{w}");
    assert!(w.contains("item 5 (line 6): unparseable date \"someday\""), "{w}");
}

#[test]
fn json_feed_items() {
    let doc = r#"{
      "version": "https://jsonfeed.org/version/1.1",
      "title": "J &amp; F",
      "items": [
        {"id": 42, "url": "/p/42", "title": "Forty <em>two</em>", "content_html": "<p>html</p>",
         "tags": ["a", 1, "b"], "date_published": "2024-01-02T10:00:00Z",
         "date_modified": "Tue, 02 Jan 2024 11:00:00 GMT", "image": "/i.png"},
        "not an object",
        {"id": "", "external_url": "https://elsewhere.example/x", "summary": "s", "content_text": "t"},
        {"id": "x", "content_text": "  plain\n\ntext &amp; more ", "attachments": [{"url": "https://e.example/a.mp3", "mime_type": "audio/mpeg"}, {"url": "https://e.example/a.jpg", "mime_type": "image/jpeg"}]},
        {}
      ]
    }"#;
    let feed = ok(doc);
    assert_eq!(feed.title.as_deref(), Some("J & F"));
    assert_eq!(feed.items.len(), 3);
    let a = &feed.items[0];
    assert_eq!(a.id.as_deref(), Some("42"));
    assert_eq!(a.link.as_deref(), Some("https://example.com/p/42"));
    assert_eq!(a.title, "Forty two");
    assert_eq!(a.summary, "html");
    assert_eq!(a.tags, ["a", "b"]);
    assert_eq!(a.published, Some(1704189600));
    assert_eq!(a.updated, Some(1704193200));
    assert_eq!(a.image.as_deref(), Some("https://example.com/i.png"));
    let b = &feed.items[1];
    assert_eq!(b.id, None);
    assert_eq!(b.link.as_deref(), Some("https://elsewhere.example/x"));
    assert_eq!(b.summary, "s");
    let c = &feed.items[2];
    assert_eq!(c.summary, "plain text & more");
    assert_eq!(c.image.as_deref(), Some("https://e.example/a.jpg"));
    let w = feed.warnings.join("\n");
    assert!(w.contains("item 2: skipped: not an object"), "{w}");
    assert!(w.contains("item 5: skipped: no id, link, title or text"), "{w}");
}

#[test]
fn item_cap() {
    let mut doc = String::from("<rss><channel>");
    for i in 0..MAX_ITEMS + 5 {
        doc.push_str(&format!("<item><guid>{i}</guid></item>"));
    }
    doc.push_str("</channel></rss>");
    let feed = ok(&doc);
    assert_eq!(feed.items.len(), MAX_ITEMS);
    assert_eq!(feed.items.last().unwrap().id.as_deref(), Some("9999"));
    assert!(feed.warnings.iter().any(|w| w.contains("more than 10000 items")));

    let items: Vec<String> = (0..MAX_ITEMS + 1).map(|i| format!(r#"{{"id":"{i}"}}"#)).collect();
    let doc =
        format!(r#"{{"version":"https://jsonfeed.org/version/1","items":[{}]}}"#, items.join(","));
    assert_eq!(ok(&doc).items.len(), MAX_ITEMS);
}

#[test]
fn warnings_are_capped() {
    let items: String = (0..500).map(|_| "<item></item>").collect();
    let feed = ok(&rss(&items));
    assert_eq!(feed.warnings.len(), presence_feed::MAX_WARNINGS + 1);
    assert_eq!(feed.warnings.last().unwrap(), "400 more warnings left out");
}

#[test]
fn deep_nesting_is_skipped_not_recursed() {
    let depth = 200_000;
    let doc = format!(
        "<rss><channel><item><guid>1</guid><x>{}{}</x><title>after</title></item>\
         <item><guid>2</guid>{}</item></channel></rss>",
        "<a><b/>".repeat(depth),
        "</a>".repeat(depth),
        "<e/>".repeat(1000),
    );
    let feed = ok(&doc);
    assert_eq!(feed.items.len(), 2);
    assert_eq!(feed.items[0].title, "after");
}

#[test]
fn huge_fields_are_bounded() {
    let huge = "word ".repeat(1_000_000);
    let feed = ok(&rss(&format!(
        "<item><guid>1</guid><title>{huge}</title><description>{huge}</description><category>{huge}</category></item>"
    )));
    let item = &feed.items[0];
    assert!(item.title.chars().count() <= 1000);
    assert!(item.summary.chars().count() <= 1000 && item.summary.ends_with('…'));
    assert!(item.tags[0].chars().count() <= 200);
    let too_big = vec![b' '; presence_feed::MAX_INPUT_BYTES + 1];
    assert!(matches!(parse(&too_big, &base(), None), Err(ParseError::TooLarge { .. })));
}

#[test]
fn encodings_through_parse() {
    // windows-1251 via the XML declaration.
    let mut doc =
        b"<?xml version=\"1.0\" encoding=\"windows-1251\"?><rss><channel><title>".to_vec();
    doc.extend_from_slice(&[0xcd, 0xee, 0xe2, 0xee, 0xf1, 0xf2, 0xe8]);
    doc.extend_from_slice(b"</title></channel></rss>");
    assert_eq!(parse(&doc, &base(), None).unwrap().title.as_deref(), Some("Новости"));

    // ISO-8859-1 via the content type only.
    let doc = b"<rss><channel><title>Caf\xe9</title></channel></rss>";
    let feed = parse(doc, &base(), Some("application/rss+xml; charset=iso-8859-1")).unwrap();
    assert_eq!(feed.title.as_deref(), Some("Café"));
    assert!(feed.warnings.is_empty(), "{:?}", feed.warnings);

    // UTF-16LE with BOM and a declaration that says so.
    let text = "<?xml version=\"1.0\" encoding=\"UTF-16\"?>\n<feed xmlns=\"http://www.w3.org/2005/Atom\"><title>Ωmega</title></feed>";
    let mut doc = vec![0xff, 0xfe];
    doc.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
    assert_eq!(parse(&doc, &base(), None).unwrap().title.as_deref(), Some("Ωmega"));

    // BOM and whitespace before the declaration.
    let doc =
        b"\xef\xbb\xbf \n <?xml version=\"1.0\"?>\n<rss><channel><title>x</title></channel></rss>";
    assert_eq!(parse(doc, &base(), None).unwrap().title.as_deref(), Some("x"));

    // Shift_JIS declared.
    let (bytes, _, _) = encoding_rs::SHIFT_JIS.encode("<?xml version=\"1.0\" encoding=\"Shift_JIS\"?><rss><channel><title>日本語</title></channel></rss>");
    assert_eq!(parse(&bytes, &base(), None).unwrap().title.as_deref(), Some("日本語"));
}

#[test]
fn entity_handling() {
    let feed = ok(&rss("<item><guid>1</guid><title>&eacute;t&eacute; &nbsp;&copy; &#x1F600; &bogus; &#xD800; & x</title></item>"));
    assert_eq!(feed.items[0].title, "été © 😀 &bogus; \u{fffd} & x");
    let e = err("<!DOCTYPE rss [<!ENTITY x \"y\">]><rss/>");
    assert_eq!(e, "line 1: entity declarations are not allowed (possible entity expansion attack)");
}

#[test]
fn identity() {
    let item = |id: Option<&str>, link: Option<&str>, title: &str| Item {
        id: id.map(str::to_owned),
        link: link.map(str::to_owned),
        title: title.to_owned(),
        summary: String::new(),
        tags: vec![],
        published: Some(1),
        updated: None,
        image: None,
    };
    assert_eq!(item(Some("g"), Some("https://e.com/a"), "").identity().as_deref(), Some("g"));
    assert_eq!(
        item(None, Some("https://E.com/a?utm_medium=x#f"), "").identity().as_deref(),
        Some("https://e.com/a")
    );
    let synthetic = item(None, None, "Title").identity().unwrap();
    assert_eq!(synthetic, item(None, None, "Title").identity().unwrap());
    assert_ne!(synthetic, item(None, None, "Other").identity().unwrap());
    // Stable across versions and platforms: pinned value.
    assert_eq!(synthetic, "urn:presence-feed:text:5e5a2720b8a79c0a");
    assert_eq!(item(None, None, "").identity(), None);
    assert_eq!(canonical_link("not a url"), None);
}
