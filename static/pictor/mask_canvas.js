// The playground's mask editor: paint over the chosen image with a brush or an eraser, change
// the brush size, invert; the mask leaves as a black-and-white PNG data URL, white = repaint.
// window.PictorMask = { load(dataUrl), toDataURL(), isEmpty(), onChange(fn) }.
(function () {
  "use strict";
  const canvas = document.getElementById("mask-canvas");
  const source = document.getElementById("mask-source");
  if (!canvas || !source) return;
  const ctx = canvas.getContext("2d");
  const size = document.getElementById("mask-size");
  const eraser = document.getElementById("mask-eraser");
  const listeners = [];
  let painting = false;
  let last = null;
  let painted = false;

  function changed() {
    for (const fn of listeners) fn();
  }

  function point(event) {
    // The canvas holds the image's own pixels; the page shows it scaled.
    const box = canvas.getBoundingClientRect();
    return {
      x: ((event.clientX - box.left) * canvas.width) / box.width,
      y: ((event.clientY - box.top) * canvas.height) / box.height,
      scale: canvas.width / box.width,
    };
  }

  function stroke(from, to) {
    ctx.globalCompositeOperation = eraser.checked ? "destination-out" : "source-over";
    // Shown red over the picture; only the alpha channel makes the mask.
    ctx.strokeStyle = "#f03e3e";
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.lineWidth = parseInt(size.value, 10) * to.scale;
    ctx.beginPath();
    ctx.moveTo(from.x, from.y);
    ctx.lineTo(to.x + 0.01, to.y);
    ctx.stroke();
    painted = true;
  }

  canvas.addEventListener("pointerdown", (event) => {
    if (!canvas.width) return;
    event.preventDefault();
    canvas.setPointerCapture(event.pointerId);
    painting = true;
    last = point(event);
    stroke(last, last);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!painting) return;
    const next = point(event);
    stroke(last, next);
    last = next;
  });
  function stop() {
    if (!painting) return;
    painting = false;
    changed();
  }
  canvas.addEventListener("pointerup", stop);
  canvas.addEventListener("pointercancel", stop);

  function invert() {
    if (!canvas.width) return;
    const image = ctx.getImageData(0, 0, canvas.width, canvas.height);
    const data = image.data;
    for (let i = 0; i < data.length; i += 4) {
      data[i] = 240;
      data[i + 1] = data[i + 2] = 62;
      data[i + 3] = 255 - data[i + 3];
    }
    ctx.putImageData(image, 0, 0);
    painted = true;
    changed();
  }

  function clear() {
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    painted = false;
    changed();
  }

  document.getElementById("mask-invert").addEventListener("click", invert);
  document.getElementById("mask-clear").addEventListener("click", clear);

  window.PictorMask = {
    load(dataUrl) {
      source.onload = () => {
        canvas.width = source.naturalWidth;
        canvas.height = source.naturalHeight;
        clear();
      };
      source.src = dataUrl;
    },
    isEmpty() {
      if (!painted || !canvas.width) return true;
      const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
      for (let i = 3; i < data.length; i += 4) if (data[i] > 0) return false;
      return true;
    },
    toDataURL() {
      // Opaque black and white at the image's size: painted pixels white, the rest black.
      const out = document.createElement("canvas");
      out.width = canvas.width;
      out.height = canvas.height;
      const octx = out.getContext("2d");
      const image = ctx.getImageData(0, 0, canvas.width, canvas.height);
      const data = image.data;
      for (let i = 0; i < data.length; i += 4) {
        const v = data[i + 3] > 127 ? 255 : 0;
        data[i] = data[i + 1] = data[i + 2] = v;
        data[i + 3] = 255;
      }
      octx.putImageData(image, 0, 0);
      return out.toDataURL("image/png");
    },
    onChange(fn) {
      listeners.push(fn);
    },
  };
})();
