// js_on_load of each probability beside a slider: a setter the live slider (live_slider.js)
// calls with the label's new probability HTML, shown through the component's props.
(window.ccvae ??= { probs: {} }).probs[props.index] = (html) => { props.value = html; };
