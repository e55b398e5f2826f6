// Render the \( \) and \[ \] spans that pymdownx.arithmatex (generic mode) leaves in the page,
// with the vendored KaTeX (no CDN: the docs render offline). Material's instant navigation calls document$.
function awlossRenderMath() {
  renderMathInElement(document.body, {
    delimiters: [
      { left: "\\[", right: "\\]", display: true },
      { left: "\\(", right: "\\)", display: false },
    ],
    throwOnError: false,
  });
}
if (typeof document$ !== "undefined") { document$.subscribe(awlossRenderMath); }
else { document.addEventListener("DOMContentLoaded", awlossRenderMath); }
