/* Blinks the LED of the clean-led board (demo/clean-led) from a microcontroller's GPIO pin.
 * The board's connector J1 carries the pin; LED D1 with R1 is lit when the pin is high. */
#include <stdint.h>

#define LED_PORT (*(volatile uint32_t *)0x40020014u) /* GPIO output data register */
#define LED_PIN  (1u << 5)

static void delay(volatile uint32_t n)
{
    while (n--) {
    }
}

int main(void)
{
    for (;;) {
        LED_PORT ^= LED_PIN;
        delay(400000u);
    }
}
