// Draws the figures the server built (JSON data blocks; no inline script, see the page's CSP).
document.querySelectorAll("script.figure").forEach(function (block) {
  var figure = JSON.parse(block.textContent);
  Plotly.newPlot(block.dataset.target, figure.data, figure.layout, {displaylogo: false, responsive: true})
    .then(function () { document.getElementById(block.dataset.target).classList.add("drawn"); });
});
