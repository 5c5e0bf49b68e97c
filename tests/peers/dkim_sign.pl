#!/usr/bin/perl
# dkim_sign.pl -- sign a message with Mail::DKIM (Debian libmail-dkim-perl).
#
#   dkim_sign.pl --key FILE --selector S --domain D [--method relaxed]
#                [--algorithm rsa-sha256] [--headers from:to:...]
#                [--identity I] [--expiration SECONDS] [--timestamp T] [MESSAGE]
#
# --method is Mail::DKIM's c= value (simple, relaxed, relaxed/simple, ...).
# --headers replaces Mail::DKIM's own choice of signed fields (its
# Headers parameter: names as listed; Mail::DKIM adds an extra From, To, ...
# for oversigning only when asked, so none is added here).
#
# The message (a file, or standard input) may have LF or CRLF line endings;
# it is signed as CRLF.  Prints the DKIM-Signature field (CRLF-folded, no
# final line ending) on stdout.  Exit 0 on success, 1 when Mail::DKIM
# refuses (the reason on stderr), 2 on usage or I/O errors.
use strict;
use warnings;

use Getopt::Long qw(GetOptions);
use Mail::DKIM::Signer;
use Mail::DKIM::TextWrap;

my %opt = ( method => 'relaxed', algorithm => 'rsa-sha256' );
GetOptions( \%opt, 'key=s', 'selector=s', 'domain=s', 'method=s', 'algorithm=s',
    'headers=s', 'identity=s', 'expiration=i', 'timestamp=i' )
  or exit 2;
foreach my $required (qw(key selector domain)) {
    next if defined $opt{$required};
    print STDERR "dkim_sign.pl: --$required is required\n";
    exit 2;
}

my $data = read_message( $ARGV[0] // '-' );
$data =~ s/\015?\012/\015\012/g;

my %args = (
    Algorithm => $opt{algorithm},
    Method    => $opt{method},
    Domain    => $opt{domain},
    Selector  => $opt{selector},
    KeyFile   => $opt{key},
);
$args{Headers}    = $opt{headers}  if defined $opt{headers};
$args{Identity}   = $opt{identity} if defined $opt{identity};
$args{Timestamp}  = $opt{timestamp} if defined $opt{timestamp};
$args{Expiration} = time() + $opt{expiration} if defined $opt{expiration};

my $signature;
eval {
    my $dkim = Mail::DKIM::Signer->new(%args);
    $dkim->PRINT($data);
    $dkim->CLOSE();
    $signature = $dkim->signature->as_string;
    1;
} or do {
    my $err = $@ || 'unknown error';
    $err =~ s/\s+$//;
    print STDERR "dkim_sign.pl: $err\n";
    exit 1;
};
$signature =~ s/\015?\012/\015\012/g;
print $signature;
exit 0;

sub read_message {
    my ($path) = @_;
    my $fh;
    if ( $path eq '-' ) {
        $fh = \*STDIN;
    }
    else {
        open $fh, '<', $path or do { print STDERR "$path: $!\n"; exit 2 };
    }
    binmode $fh;
    local $/;
    my $data = <$fh>;
    return $data // '';
}
