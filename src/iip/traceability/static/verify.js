// The consumer's page: offer the phone's position for the "where did you buy it" form.
// Loaded from a file because the console's CSP forbids inline scripts; the form works without it.
(function () {
  "use strict";
  var form = document.getElementById("locate-form");
  if (!form || !("geolocation" in navigator)) {
    return;
  }
  var ask = form.querySelector('[data-geo="ask"]');
  var status = form.querySelector('[data-geo="status"]');
  var latitude = form.querySelector('[data-geo="lat"]');
  var longitude = form.querySelector('[data-geo="lon"]');
  ask.hidden = false;
  ask.addEventListener("click", function () {
    ask.disabled = true;
    navigator.geolocation.getCurrentPosition(
      function (position) {
        latitude.value = position.coords.latitude.toFixed(5);
        longitude.value = position.coords.longitude.toFixed(5);
        status.hidden = false;
        ask.hidden = true;
      },
      function () {
        ask.disabled = false;
      },
      { enableHighAccuracy: false, timeout: 15000, maximumAge: 600000 }
    );
  });
})();
