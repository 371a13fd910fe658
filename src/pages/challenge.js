// The proof of work of a room with [room.challenge], run as a Web Worker so the page stays
// responsive and nothing asks the visitor to do anything. Given {token, bits, puzzles}, for
// each puzzle i it finds a nonce such that SHA-256(SHA-256(token ":" i) || nonce as 8 bytes,
// big-endian) starts with `bits` zero bits; it reports each puzzle solved, then the nonces.
// SHA-256 is written out here (no WebCrypto: it is missing on plain-HTTP pages and too slow
// per call): the message of a try is one block, whose first 8 words never change.
"use strict";
var K = new Int32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2
]);
var H0 = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
var W = new Int32Array(64);

function rotr(x, n) { return (x >>> n) | (x << (32 - n)); }

// One compression of the 16 words in W[0..16] into h (8 words), in place.
function compress(h) {
  for (var t = 16; t < 64; t++) {
    var a = W[t - 15], b = W[t - 2];
    W[t] = (W[t - 16] + (rotr(a, 7) ^ rotr(a, 18) ^ (a >>> 3)) + W[t - 7] +
      (rotr(b, 17) ^ rotr(b, 19) ^ (b >>> 10))) | 0;
  }
  var A = h[0], B = h[1], C = h[2], D = h[3], E = h[4], F = h[5], G = h[6], Hh = h[7];
  for (t = 0; t < 64; t++) {
    var t1 = (Hh + (rotr(E, 6) ^ rotr(E, 11) ^ rotr(E, 25)) + ((E & F) ^ (~E & G)) + K[t] + W[t]) | 0;
    var t2 = ((rotr(A, 2) ^ rotr(A, 13) ^ rotr(A, 22)) + ((A & B) ^ (A & C) ^ (B & C))) | 0;
    Hh = G; G = F; F = E; E = (D + t1) | 0; D = C; C = B; B = A; A = (t1 + t2) | 0;
  }
  h[0] = (h[0] + A) | 0; h[1] = (h[1] + B) | 0; h[2] = (h[2] + C) | 0; h[3] = (h[3] + D) | 0;
  h[4] = (h[4] + E) | 0; h[5] = (h[5] + F) | 0; h[6] = (h[6] + G) | 0; h[7] = (h[7] + Hh) | 0;
}

// SHA-256 of an ASCII string, as 8 words.
function sha256(text) {
  var n = text.length, blocks = Math.ceil((n + 9) / 64), h = H0.slice();
  for (var b = 0; b < blocks; b++) {
    for (var w = 0; w < 16; w++) {
      var word = 0;
      for (var k = 0; k < 4; k++) {
        var i = b * 64 + w * 4 + k;
        var byte = i < n ? text.charCodeAt(i) & 0xff : i === n ? 0x80 : 0;
        word = (word << 8) | byte;
      }
      W[w] = word;
    }
    if (b === blocks - 1) { W[14] = Math.floor(n / 0x20000000); W[15] = (n * 8) | 0; }
    compress(h);
  }
  return h;
}

// The nonce of one puzzle: the prefix's 8 words, then the nonce's two, then padding.
function solve(prefix, bits) {
  var h = new Int32Array(8), mask = bits >= 32 ? -1 : ~(-1 >>> bits);
  for (var hi = 0; ; hi++) {
    for (var lo = 0; lo <= 0xffffffff; lo++) {
      for (var w = 0; w < 8; w++) { W[w] = prefix[w]; h[w] = H0[w]; }
      W[8] = hi; W[9] = lo | 0; W[10] = 0x80000000 | 0;
      W[11] = 0; W[12] = 0; W[13] = 0; W[14] = 0; W[15] = 320;
      compress(h);
      if ((h[0] & mask) === 0 && (bits <= 32 || (h[1] & ~(-1 >>> (bits - 32))) === 0)) return hi * 4294967296 + lo;
    }
  }
}

self.onmessage = function (e) {
  var c = e.data, nonces = [], started = Date.now();
  for (var i = 0; i < c.puzzles; i++) {
    nonces.push(solve(sha256(c.token + ":" + i), c.bits));
    self.postMessage({ done: i + 1 });
  }
  self.postMessage({ nonces: nonces, ms: Date.now() - started });
};
