#!/usr/bin/perl
# dkim_verify.pl -- verify a message's DKIM signatures with Mail::DKIM
# (Debian libmail-dkim-perl) and print the verdicts as JSON.
#
#   dkim_verify.pl --keytable FILE [MESSAGE]
#   dkim_verify.pl --dns-port PORT [--dns-host 127.0.0.1] [MESSAGE]
#
# --keytable answers Mail::DKIM's key lookups from a key table file (one
# record a line, "NAME VALUE"; VALUE "NXDOMAIN" = no such name, "~~text~~" =
# a DNS error such as SERVFAIL or a time-out, '""' = an empty TXT string;
# "#" and ";" comments; a name not listed is NXDOMAIN) by replacing
# Mail::DKIM::DNS::query, the one function through which Mail::DKIM asks DNS.
# --dns-port points a Net::DNS::Resolver at a DNS server on loopback
# instead (Mail::DKIM::DNS::resolver), so the real DNS path is used.
#
# The message (a file, or standard input) may have LF or CRLF line endings;
# Mail::DKIM wants CRLF, so bare LFs become CRLF.
#
# Output: {"result": ..., "detail": ..., "signatures": [{"result",
# "detail", "domain", "selector", "algorithm", "canonicalization",
# "identity"}, ...]} in header order; "result" is Mail::DKIM's word
# (pass, fail, invalid, temperror, none).  Exit 0 when verification ran,
# 2 on usage or I/O errors.
use strict;
use warnings;

use Getopt::Long qw(GetOptions);
use JSON::PP ();
use Mail::DKIM::Verifier;
use Mail::DKIM::DNS;
use Net::DNS ();

my ( $keytable, $dns_port, $dns_host ) = ( undef, undef, '127.0.0.1' );
GetOptions(
    'keytable=s' => \$keytable,
    'dns-port=i' => \$dns_port,
    'dns-host=s' => \$dns_host,
) or exit 2;
if ( defined($keytable) == defined($dns_port) ) {
    print STDERR "dkim_verify.pl: give exactly one of --keytable FILE, --dns-port PORT\n";
    exit 2;
}

if ( defined $keytable ) {
    my %table = read_keytable($keytable);
    no warnings 'redefine';
    *Mail::DKIM::DNS::query = sub {
        my ( $name, $type ) = @_;
        my $value = $table{ lc $name };
        if ( !defined $value || $value eq 'NXDOMAIN' ) {
            $@ = 'NXDOMAIN';
            return;
        }
        if ( $value =~ /^~~(.*)~~$/ ) {
            die "DNS error: $1\n";    # what Mail::DKIM::DNS::query dies with
        }
        if ( uc $type ne 'TXT' ) {
            $@ = 'NODATA';
            return;
        }
        $value = '' if $value eq '""';
        # one TXT record, cut into 255-byte character-strings as DNS would
        my @strings = length $value ? ( $value =~ /(.{1,255})/gs ) : ('');
        $@ = 'NOERROR';
        return Net::DNS::RR->new(
            owner   => $name,
            type    => 'TXT',
            txtdata => [@strings],
        );
    };
}
else {
    my $resolver = Net::DNS::Resolver->new(
        nameservers => [$dns_host],
        port        => $dns_port,
        recurse     => 1,
        retry       => 1,
        udp_timeout => 3,
        tcp_timeout => 3,
    );
    Mail::DKIM::DNS::resolver($resolver);
}

my $data = read_message( $ARGV[0] // '-' );
$data =~ s/\015?\012/\015\012/g;

my $dkim = Mail::DKIM::Verifier->new();
$dkim->PRINT($data);
$dkim->CLOSE();

my @signatures;
foreach my $sig ( $dkim->signatures ) {
    my $algorithm = eval { $sig->algorithm } // '';
    my $canon = eval { $sig->canonicalization } // '';
    push @signatures,
      {
        result           => $sig->result // 'invalid',
        detail           => $sig->result_detail // '',
        domain           => eval { $sig->domain } // '',
        selector         => eval { $sig->selector } // '',
        algorithm        => $algorithm,
        canonicalization => $canon,
        identity         => eval { $sig->identity } // '',
      };
}
print JSON::PP->new->canonical->encode(
    {
        result     => $dkim->result // 'none',
        detail     => $dkim->result_detail // '',
        signatures => \@signatures,
    }
  ),
  "\n";
exit 0;

sub read_keytable {
    my ($path) = @_;
    my %table;
    open my $fh, '<', $path or do { print STDERR "$path: $!\n"; exit 2 };
    while ( my $line = <$fh> ) {
        $line =~ s/[\r\n]+$//;
        next if $line =~ /^\s*(?:[#;]|$)/;
        my ( $name, $value ) = $line =~ /^\s*(\S+)\s*(.*?)\s*$/;
        $table{ lc $name } = $value;
    }
    close $fh;
    return %table;
}

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
