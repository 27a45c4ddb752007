// Typesets the math that Sphinx wrote as \( ... \) and \[ ... \] (docs/conf.py) with the local KaTeX copy.
// A formula KaTeX cannot parse is reported on the console and left as source: tests/test_docs.py fails on both.
document.addEventListener("DOMContentLoaded", function () {
  renderMathInElement(document.body, {
    delimiters: [
      { left: "\\[", right: "\\]", display: true },
      { left: "\\(", right: "\\)", display: false },
    ],
    ignoredTags: ["script", "noscript", "style", "textarea", "pre", "code", "option"],
    throwOnError: true,
    errorCallback: function (message, error) {
      console.error("KaTeX: " + message + " " + error);
    },
  });
});
