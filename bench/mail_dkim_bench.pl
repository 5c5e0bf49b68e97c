#!/usr/bin/perl
# mail_dkim_bench.pl -- Mail::DKIM's sign and verify rates, for bench/dkim.py.
#
#   mail_dkim_bench.pl sign   KEY.pem SELECTOR DOMAIN MESSAGE SECONDS
#   mail_dkim_bench.pl verify RECORD  SELECTOR DOMAIN MESSAGE SECONDS
#
# rsa-sha256, c=relaxed/relaxed.  sign: the key is loaded once (a
# long-running signer keeps it), one Mail::DKIM::Signer per message.
# verify: Mail::DKIM::DNS::query answers the key record from memory (no
# DNS), one Mail::DKIM::Verifier per message; every one must pass.
# Timing is done here, after one warm-up message: prints
#   ops N seconds S rate R failures F
# Exit 0 when every operation succeeded, 1 otherwise, 2 on usage errors.
use strict;
use warnings;

use Time::HiRes qw(time);
use Mail::DKIM::Signer;
use Mail::DKIM::Verifier;
use Mail::DKIM::PrivateKey;
use Mail::DKIM::DNS;
use Net::DNS ();

my ( $op, $keyarg, $selector, $domain, $path, $seconds ) = @ARGV;
if ( !defined $seconds || ( $op ne 'sign' && $op ne 'verify' ) ) {
    print STDERR "usage: mail_dkim_bench.pl sign|verify KEY|RECORD SELECTOR DOMAIN MESSAGE SECONDS\n";
    exit 2;
}
open my $fh, '<', $path or do { print STDERR "$path: $!\n"; exit 2 };
binmode $fh;
my $message = do { local $/; <$fh> };
close $fh;
$message =~ s/\015?\012/\015\012/g;

my $once;
if ( $op eq 'sign' ) {
    my $key = Mail::DKIM::PrivateKey->load( File => $keyarg );
    $once = sub {
        my $dkim = Mail::DKIM::Signer->new(
            Algorithm => 'rsa-sha256',
            Method    => 'relaxed/relaxed',
            Domain    => $domain,
            Selector  => $selector,
            Key       => $key,
        );
        $dkim->PRINT($message);
        $dkim->CLOSE();
        return defined $dkim->signature->as_string;
    };
}
else {
    my @strings = ( $keyarg =~ /(.{1,255})/gs );
    no warnings 'redefine';
    *Mail::DKIM::DNS::query = sub {
        my ( $name, $type ) = @_;
        $@ = 'NOERROR';
        return Net::DNS::RR->new( owner => $name, type => 'TXT', txtdata => [@strings] );
    };
    $once = sub {
        my $dkim = Mail::DKIM::Verifier->new();
        $dkim->PRINT($message);
        $dkim->CLOSE();
        return $dkim->result eq 'pass';
    };
}

my ( $ops, $failures ) = ( 0, 0 );
$failures++ unless $once->();    # warm-up, not counted
my $start = time;
my $elapsed;
do {
    $failures++ unless $once->();
    $ops++;
    $elapsed = time - $start;
} while ( $elapsed < $seconds );
printf "ops %d seconds %.6f rate %.1f failures %d\n", $ops, $elapsed, $ops / $elapsed, $failures;
exit( $failures ? 1 : 0 );
