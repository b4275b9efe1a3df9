// MathJax settings for pymdownx.arithmatex (generic mode): only elements of class
// "arithmatex" are typeset; the bundle itself is served from the site (assets/mathjax).
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
};
