// Full-text search of the offline docs: filters window.SEARCH_INDEX (search-index.js) as the reader types;
// ?q=words in the URL runs a search on load. tools/build_docs.py embeds this in every page.
(function () {
  var root = document.currentScript.getAttribute('data-root') || '';
  var input = document.getElementById('search-input'), box = document.getElementById('search-results');
  if (!input || !box) return;
  var index = window.SEARCH_INDEX || [];
  function esc(s) { return s.replace(/[&<>"]/g, function (c) { return {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'}[c]; }); }
  function reEsc(s) { return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'); }
  function count(text, t) { var n = 0, i = text.indexOf(t); while (i >= 0 && n < 5) { n++; i = text.indexOf(t, i + t.length); } return n; }
  function snippet(text, terms) {
    var low = text.toLowerCase(), at = -1;
    terms.forEach(function (t) { var i = low.indexOf(t); if (i >= 0 && (at < 0 || i < at)) at = i; });
    var start = Math.max(0, at - 50), s = text.slice(start, start + 170);
    s = (start > 0 ? '\u2026' : '') + esc(s) + (start + 170 < text.length ? '\u2026' : '');
    return s.replace(new RegExp('(' + terms.map(function (t) { return reEsc(esc(t)); }).join('|') + ')', 'gi'), '<mark>$1</mark>');
  }
  function search(q) {
    var terms = q.toLowerCase().split(/\s+/).filter(function (t) { return t.length > 1; });
    if (!terms.length) { box.hidden = true; box.innerHTML = ''; return; }
    var hits = [];
    index.forEach(function (page) {
      page.s.forEach(function (sec) {
        var head = (page.t + ' ' + sec[0]).toLowerCase(), text = sec[2].toLowerCase(), score = 0;
        for (var k = 0; k < terms.length; k++) {
          var h = head.indexOf(terms[k]) >= 0, n = count(text, terms[k]);
          if (!h && !n) return;
          score += (h ? 10 : 0) + n;
        }
        hits.push({score: score, page: page, sec: sec});
      });
    });
    hits.sort(function (a, b) { return b.score - a.score; });
    var items = hits.slice(0, 25).map(function (r) {
      var href = root + r.page.p + (r.sec[1] ? '#' + r.sec[1] : '');
      var name = esc(r.page.t) + (r.sec[0] ? ' \u203a ' + esc(r.sec[0]) : '');
      return '<li><a href="' + esc(href) + '">' + name + '</a><div class="snippet">' + snippet(r.sec[2] || r.sec[0], terms) + '</div></li>';
    });
    box.innerHTML = '<div class="search-count">' + (hits.length ? hits.length + (hits.length === 1 ? ' section' : ' sections') +
      ' match' + (hits.length > 25 ? ' (first 25)' : '') : 'Nothing matches') + '</div><ul>' + items.join('') + '</ul>';
    box.hidden = false;
  }
  input.addEventListener('input', function () { search(input.value); });
  input.addEventListener('keydown', function (e) { if (e.key === 'Escape') { input.value = ''; search(''); } });
  var q = new URLSearchParams(location.search).get('q');
  if (q) { input.value = q; search(q); }
})();
