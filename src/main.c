/* main.c - placeholder until the server lands in this commit series. */
#include <stdio.h>

int main(void)
{
    fputs("crewd: not built yet\n", stderr);
    return 1;
}
