#!/usr/bin/perl
# Verify a DomainKeys (or DKIM) signed message with Mail::DKIM's Verifier
# (Debian libmail-dkim-perl), answering its DNS queries from a key table.
#
#   dk_verify.pl KEYTABLE < message
#
# Key table lines: "NAME  VALUE" (TXT data, strings joined); VALUE "NXDOMAIN"
# for no such name, "~~text~~" for a DNS error; "#" or ";" start comments.
# A name not in the table does not exist.  Prints two lines: the result
# (pass, fail, invalid, none, ...) and Mail::DKIM's result_detail.
use strict;
use warnings;
use Mail::DKIM::Verifier;
use Mail::DKIM::DNS;
use Net::DNS;

@ARGV == 1 or die "usage: dk_verify.pl KEYTABLE < message\n";
my %table;
open my $fh, '<', $ARGV[0] or die "cannot read $ARGV[0]: $!\n";
while ( my $line = <$fh> ) {
    $line =~ s/\s+\z//;
    next if $line =~ /^\s*(?:[#;]|\z)/;
    my ( $name, $value ) = split /\s+/, $line, 2;
    $value = '' unless defined $value;
    $value = '' if $value eq '""';
    push @{ $table{ lc $name } }, $value;
}
close $fh;

# Mail::DKIM's lookups all go through Mail::DKIM::DNS::query (called by
# name, so replacing the glob reaches them): answer from the table instead.
{
    no warnings 'redefine';
    *Mail::DKIM::DNS::query = sub {
        my ( $name, $type ) = @_;
        my $values = $table{ lc $name };
        if ( !$values || $values->[0] eq 'NXDOMAIN' ) {
            $@ = 'NXDOMAIN';
            return;
        }
        if ( $values->[0] =~ /^~~(.*)~~\z/ ) {
            die "DNS error: $1\n";
        }
        $@ = 'NOERROR';
        return map {
            my $text = $_;
            my @strings = $text eq '' ? ('') : ( $text =~ /(.{1,255})/gs );
            Net::DNS::RR->new( name => $name, type => 'TXT', txtdata => [@strings] )
        } @$values;
    };
}

my $verifier = Mail::DKIM::Verifier->new();
binmode STDIN;
my $message = do { local $/; <STDIN> };
$message =~ s/\015?\012/\015\012/g;
$verifier->PRINT($message);
$verifier->CLOSE;
print $verifier->result, "\n", $verifier->result_detail, "\n";
