#!/usr/bin/perl
# Sign a message with DomainKeys using Mail::DKIM (Debian libmail-dkim-perl),
# the independent peer quailmail's DomainKeys signer is compared with.
#
#   dk_sign.pl KEYFILE SELECTOR DOMAIN simple|nofws [H] < message
#
# H: absent or "-" for no h= tag (all headers signed); "default" for the
# list Mail::DKIM picks itself (its usual headers, as found in the message);
# anything else is written as the h= value, e.g. "from:subject".
# Prints the DomainKey-Signature field, one line.  LF input is read as CRLF.
use strict;
use warnings;
use Mail::DKIM::Signer;
use Mail::DKIM::DkSignature;

@ARGV >= 4 or die "usage: dk_sign.pl KEYFILE SELECTOR DOMAIN simple|nofws [H]\n";
my ( $keyfile, $selector, $domain, $method, $h ) = @ARGV;
$h = '-' unless defined $h;

my $policy = sub {
    my $dkim = shift;
    my $headers = $h eq '-' ? undef : $h eq 'default' ? $dkim->headers : $h;
    $dkim->add_signature(
        Mail::DKIM::DkSignature->new(
            Algorithm => 'rsa-sha1',
            Method    => $method,
            Headers   => $headers,
            Domain    => $domain,
            Selector  => $selector,
        )
    );
    return;
};

my $signer = Mail::DKIM::Signer->new(
    Algorithm => 'rsa-sha1',
    Method    => $method,
    Domain    => $domain,
    Selector  => $selector,
    KeyFile   => $keyfile,
    Policy    => $policy,
);

binmode STDIN;
my $message = do { local $/; <STDIN> };
$message =~ s/\015?\012/\015\012/g;
$signer->PRINT($message);
$signer->CLOSE;
my $signature = $signer->signature or die "Mail::DKIM made no signature\n";
binmode STDOUT;
print $signature->as_string, "\n";
