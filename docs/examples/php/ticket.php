<?php
// Mint a tidings browser ticket in PHP: an HS256 JWT signed with TIDINGS_SECRET, no library.
//
//   TIDINGS_SECRET=... php docs/examples/php/ticket.php 1 entity:order:view
//
// Prints the ticket of user 1 holding the permission entity:order:view. In your
// application, tidings_ticket() answers the page's ticket request, behind your login.

function base64url(string $bytes): string
{
    return rtrim(strtr(base64_encode($bytes), '+/', '-_'), '=');
}

/** A one-time ticket for $userId: valid $ttl seconds (at most 3600), usable once. */
function tidings_ticket(string $secret, string $userId, array $perms = [], int $ttl = 300): string
{
    $now = time();
    $header = ['alg' => 'HS256', 'typ' => 'JWT'];
    $claims = [
        'sub' => $userId,                             // a string: becomes the WAMP authid
        'iat' => $now,
        'exp' => $now + $ttl,
        'jti' => base64url(random_bytes(16)),         // one use only
        'perms' => array_values($perms),              // what this user may see
    ];
    $flags = JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES;
    $signed = base64url(json_encode($header, $flags)) . '.' . base64url(json_encode($claims, $flags));
    return $signed . '.' . base64url(hash_hmac('sha256', $signed, $secret, true));
}

$secret = getenv('TIDINGS_SECRET');
if ($secret === false || $secret === '') {
    fwrite(STDERR, 'TIDINGS_SECRET is not set: the router\'s ticket secret' . PHP_EOL);
    exit(1);
}
if (!isset($argv[1])) {
    fwrite(STDERR, 'usage: php ticket.php USER_ID [PERMISSION ...]' . PHP_EOL);
    exit(2);
}
echo tidings_ticket($secret, $argv[1], array_slice($argv, 2)), PHP_EOL;
